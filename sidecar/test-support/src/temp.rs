//! A scratch directory for a test that runs the sidecar binary, removed when dropped.

use std::path::PathBuf;

/// `$TMPDIR/tollgate-<name>-<pid>`, created empty; removed with everything in it on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes (or empties) the directory for `name`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
