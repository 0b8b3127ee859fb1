//! Raw ABI calls. The SDK's wrappers panic on statuses a host may legitimately return (a
//! metric call on a host without metrics, resuming a stream that already ended, a tick period
//! set outside the root context, a shared-data write to a full zone); a panic would kill the
//! VM and every request in flight on the worker, so these return the status instead.

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
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_enqueue_shared_queue(
        queue_id: u32,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

/// Takes ownership of a buffer the host allocated through this module's allocator.
///
/// # Safety
/// `data` must be null or a buffer of `size` bytes allocated by `proxy_on_memory_allocate`.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: see the function's contract.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A header map, serialized; `None` if the host has none.
pub fn header_pairs(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer it allocated, which we then own.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok => owned(data, size),
            _ => None,
        }
    }
}

/// One header's value; `None` if absent or the host refuses.
pub fn header_value(map: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as for `header_pairs`.
    unsafe {
        match proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) {
            Status::Ok => owned(data, size),
            _ => None,
        }
    }
}

/// Shared data: `Ok(None)` when absent, `Err(())` when the host fails.
pub fn shared_get(key: &str) -> Result<Option<(Vec<u8>, u32)>, ()> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: as for `header_pairs`; the host writes one u32 into `cas`.
    unsafe {
        match proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) {
            Status::Ok => Ok(Some((owned(data, size).unwrap_or_default(), cas))),
            Status::NotFound => Ok(None),
            _ => Err(()),
        }
    }
}

/// Shared data write: the host's status.
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Status {
    // SAFETY: the pointers are valid for the call.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

/// Sets the tick period; false if the host refused.
pub fn set_tick_period(millis: u32) -> bool {
    // SAFETY: a plain integer.
    unsafe { matches!(proxy_set_tick_period_milliseconds(millis), Status::Ok) }
}

/// Sends a local reply; false if the host refused.
pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let map = serialize(headers);
    // SAFETY: the pointers are valid for the call.
    unsafe {
        matches!(
            proxy_send_local_response(
                status,
                core::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                map.as_ptr(),
                map.len(),
                -1,
            ),
            Status::Ok
        )
    }
}

/// A header map as the ABI serializes it (count, lengths, then NUL-terminated bytes).
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
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

/// Resumes the current (effective) request; false if it is gone.
pub fn continue_request() -> bool {
    // SAFETY: a plain integer.
    unsafe { matches!(proxy_continue_stream(StreamType::HttpRequest), Status::Ok) }
}

/// Makes `context_id` the context later host calls act on; false if the host refuses it.
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: a plain integer.
    unsafe { matches!(proxy_set_effective_context(context_id), Status::Ok) }
}

/// Registers the shared queue `name` for the current (root) context; its id, or `None`.
pub fn register_queue(name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: the pointers are valid for the call; the host writes one u32 into `id`.
    let status = unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
    matches!(status, Status::Ok).then_some(id)
}

/// Puts `value` in queue `id`; false if the host refuses.
pub fn enqueue(id: u32, value: &[u8]) -> bool {
    // SAFETY: the pointer is valid for `value.len()` bytes during the call.
    unsafe {
        matches!(
            proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()),
            Status::Ok
        )
    }
}

/// Takes one item from queue `id`; false when it is empty (or gone).
pub fn dequeue(id: u32) -> bool {
    let mut data = core::ptr::null_mut();
    let mut size = 0;
    // SAFETY: the host writes a buffer it allocated through this module's allocator (or
    // nothing) into `data`/`size`; `owned` takes it back so it is freed.
    unsafe {
        let status = proxy_dequeue_shared_queue(id, &mut data, &mut size);
        drop(owned(data, size));
        matches!(status, Status::Ok)
    }
}
