//! OWNER: policy helper. serde structs of the plugin JSON (deny_unknown_fields).
