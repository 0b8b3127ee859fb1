//! Raw ABI calls whose SDK wrappers panic on statuses a host may legitimately return
//! (a metric call on a host without metrics, resuming a stream that already ended). A panic
//! would kill the VM and every request in flight on the worker, so these return the status.

use proxy_wasm::types::{MapType, MetricType, Status, StreamType};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_continue_stream(stream_type: StreamType) -> Status;
    fn proxy_set_effective_context(context_id: u32) -> Status;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> Status;
}

/// The request headers, serialized as the ABI hands them over (see `facts::HeaderPairs`), or
/// `None`. The SDK's `get_map` would turn every name and value into a `String` and panic on a
/// value that is not UTF-8 (legal in HTTP as obs-text): a client could kill the VM with one
/// header. The bytes are parsed in place instead.
pub fn request_header_pairs() -> Option<Vec<u8>> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer it allocated through this module's
    // allocator (`proxy_on_memory_allocate`), of `size` bytes, which we then own.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Some(Vec::from_raw_parts(data, size, size)),
            _ => None,
        }
    }
}

/// Defines a counter; `None` when the host has no metrics.
pub fn define_counter(name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: the pointers are valid for the call; the host writes one u32 into `id`.
    let status =
        unsafe { proxy_define_metric(MetricType::Counter, name.as_ptr(), name.len(), &mut id) };
    matches!(status, Status::Ok).then_some(id)
}

/// Adds `delta` to a counter (ignored if the host refuses).
pub fn increment(id: u32, delta: u64) {
    let delta = i64::try_from(delta).unwrap_or(i64::MAX);
    // SAFETY: plain integers.
    let _ = unsafe { proxy_increment_metric(id, delta) };
}

/// Resumes the paused request of HTTP context `context_id`; false if it is gone.
pub fn resume_request(context_id: u32) -> bool {
    // SAFETY: plain integers.
    unsafe {
        matches!(proxy_set_effective_context(context_id), Status::Ok)
            && matches!(proxy_continue_stream(StreamType::HttpRequest), Status::Ok)
    }
}

/// Makes `context_id` the context later host calls of this callback act on (a call
/// dispatched, a stream resumed or answered); false if the host does not know it.
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: a plain integer.
    unsafe { matches!(proxy_set_effective_context(context_id), Status::Ok) }
}
