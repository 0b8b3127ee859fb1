#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn request<'a>(tenant: &'a str, endpoint: &'a str) -> RequestUsage<'a> {
    RequestUsage {
        tenant,
        plan: None,
        date: "2026-11-26",
        endpoint,
        status: 200,
        bytes_in: 10,
        bytes_out: 100,
        latency_ms: 3,
        user: None,
    }
}

fn record() -> UsageRecord {
    let mut record = UsageRecord::new("acme", Some("pro"), "2026-11-26", "GET /api/reports");
    record.requests = 3;
    record.errors_4xx = 1;
    record.errors_5xx = 1;
    record.latency_buckets[0] = 2;
    record.latency_buckets[11] = 1;
    record
}

fn error_of(bad: UsageRecord) -> String {
    let batch = UsageBatch {
        sender: 1,
        seq: 1,
        records: vec![record(), bad],
        requests: Vec::new(),
    };
    batch.validate().unwrap_err().to_string()
}

#[test]
fn buckets_follow_the_bounds() {
    assert_eq!(LATENCY_BUCKETS, 12);
    assert_eq!(latency_bucket(0), 0);
    assert_eq!(latency_bucket(5), 0);
    assert_eq!(latency_bucket(6), 1);
    assert_eq!(latency_bucket(10_000), 10);
    assert_eq!(latency_bucket(10_001), 11);
    assert_eq!(latency_bucket(u64::MAX), 11);
}

#[test]
fn dates_parse_and_format_both_ways() {
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2000-03-01"), Some(11_017));
    assert_eq!(parse_date("2024-02-29"), Some(19_782));
    for bad in [
        "2023-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-1-01",
        "26-11-2026",
        "1969-12-31",
        "2026-11-31",
        "+026-11-01",
        "2026-11-0a",
        "",
    ] {
        assert_eq!(parse_date(bad), None, "{bad}");
    }
    for days in [0, 59, 60, 365, 11_016, 19_782, 20_418, 2_932_896] {
        assert_eq!(parse_date(&format_date(days)), Some(days), "{days}");
    }
    assert_eq!(utc_date(1_764_201_600_000_000_000), "2025-11-27");
    assert_eq!(utc_date(1_764_201_599_999_999_999), "2025-11-26");
}

#[test]
fn batches_round_trip_and_refuse_unknown_fields() {
    let batch = UsageBatch {
        sender: 7,
        seq: 9,
        records: vec![record()],
        requests: Vec::new(),
    };
    batch.validate().unwrap();
    let json = serde_json::to_string(&batch).unwrap();
    assert_eq!(serde_json::from_str::<UsageBatch>(&json).unwrap(), batch);
    let unknown = json.replacen("\"requests\"", "\"extra\":1,\"requests\"", 1);
    assert!(serde_json::from_str::<UsageBatch>(&unknown).is_err());
    // Counters other than requests default to zero.
    let minimal: UsageRecord =
        serde_json::from_str(r#"{"tenant":"t","date":"2026-01-01","endpoint":"e","requests":0}"#)
            .unwrap();
    assert_eq!(minimal, UsageRecord::new("t", None, "2026-01-01", "e"));
}

#[test]
fn each_mistake_is_named_with_its_record() {
    let mut r = record();
    r.tenant = String::new();
    assert_eq!(
        error_of(r),
        "records[1].tenant: must be 1 to 128 bytes long"
    );
    let mut r = record();
    r.tenant = "a}b".into();
    assert_eq!(
        error_of(r),
        "records[1].tenant: must not contain control characters, '{' or '}'"
    );
    let mut r = record();
    r.endpoint = "x".repeat(129);
    assert_eq!(
        error_of(r),
        "records[1].endpoint: must be 1 to 128 bytes long"
    );
    let mut r = record();
    r.endpoint = "GET\n/".into();
    assert_eq!(
        error_of(r),
        "records[1].endpoint: must not contain control characters"
    );
    let mut r = record();
    r.plan = Some(String::new());
    assert_eq!(error_of(r), "records[1].plan: must be 1 to 128 bytes long");
    let mut r = record();
    r.date = "2026-02-30".into();
    assert_eq!(
        error_of(r),
        r#"records[1].date: "2026-02-30" is not a date (YYYY-MM-DD)"#
    );
    let mut r = record();
    r.bytes_out = MAX_RECORD_COUNT + 1;
    assert_eq!(
        error_of(r),
        "records[1].bytes_out: must be at most 281474976710656"
    );
    let mut r = record();
    r.errors_5xx = 3;
    assert_eq!(
        error_of(r),
        "records[1].errors_4xx: 4xx and 5xx errors exceed requests"
    );
    let mut r = record();
    r.latency_buckets[3] = 1;
    assert_eq!(
        error_of(r),
        "records[1].latency_buckets: must add up to requests"
    );
    let mut r = record();
    r.users = (0..257).collect();
    assert_eq!(error_of(r), "records[1].users: must hold at most 256 users");
    let batch = UsageBatch {
        sender: 1,
        seq: 1,
        records: vec![record(); MAX_USAGE_RECORDS + 1],
        requests: Vec::new(),
    };
    assert_eq!(
        batch.validate().unwrap_err().to_string(),
        "records: must hold at most 1024 records"
    );
}

#[test]
fn the_aggregate_adds_requests_per_key() {
    let mut aggregate = UsageAggregate::new(10);
    let base = request("a", "GET /x");
    assert!(aggregate.record(&base));
    assert!(aggregate.record(&RequestUsage {
        status: 404,
        latency_ms: 30,
        user: Some(1),
        plan: Some("pro"),
        ..base
    }));
    assert!(aggregate.record(&RequestUsage {
        status: 502,
        latency_ms: 20_000,
        user: Some(1),
        ..base
    }));
    assert!(aggregate.record(&request("a", "GET /y")));
    assert!(aggregate.record(&request("b", "GET /x")));
    assert!(aggregate.record(&RequestUsage {
        date: "2026-11-27",
        ..base
    }));
    assert_eq!(aggregate.len(), 4);
    let records = aggregate.drain(100);
    assert!(aggregate.is_empty());
    let first = &records[0];
    assert_eq!(
        (
            first.tenant.as_str(),
            first.endpoint.as_str(),
            first.date.as_str()
        ),
        ("a", "GET /x", "2026-11-26")
    );
    assert_eq!(first.plan.as_deref(), Some("pro"));
    assert_eq!(
        (first.requests, first.bytes_in, first.bytes_out),
        (3, 30, 300)
    );
    assert_eq!((first.errors_4xx, first.errors_5xx), (1, 1));
    assert_eq!(first.latency_ms_sum, 20_033);
    let mut buckets = [0; LATENCY_BUCKETS];
    buckets[0] = 1;
    buckets[3] = 1;
    buckets[11] = 1;
    assert_eq!(first.latency_buckets, buckets);
    assert_eq!(first.users, vec![1]);
    for record in &records {
        record.validate().unwrap();
    }
}

#[test]
fn a_full_aggregate_drops_and_counts() {
    let mut aggregate = UsageAggregate::new(2);
    assert!(aggregate.record(&request("a", "1")));
    assert!(aggregate.record(&request("a", "2")));
    assert!(!aggregate.record(&request("a", "3")));
    assert!(!aggregate.record(&request("b", "1")));
    // Existing keys still count.
    assert!(aggregate.record(&request("a", "1")));
    assert_eq!(aggregate.take_dropped(), 2);
    assert_eq!(aggregate.take_dropped(), 0);
    // Draining part makes room; the rest stays and keeps counting.
    let first = aggregate.drain(1);
    assert_eq!((first.len(), first[0].requests), (1, 2));
    assert!(aggregate.record(&request("a", "2")));
    assert!(aggregate.record(&request("a", "3")));
    let rest = aggregate.drain(10);
    assert_eq!(rest.len(), 2);
    assert_eq!((rest[0].endpoint.as_str(), rest[0].requests), ("2", 2));
    assert_eq!((rest[1].endpoint.as_str(), rest[1].requests), ("3", 1));
}

#[test]
fn many_users_open_a_second_record_for_the_key() {
    let mut aggregate = UsageAggregate::new(10);
    for user in 0..(MAX_RECORD_USERS as u64 + 10) {
        let usage = RequestUsage {
            user: Some(user),
            ..request("a", "e")
        };
        assert!(aggregate.record(&usage));
        // A user already in the first record still goes to the open one.
        assert!(aggregate.record(&usage));
    }
    let records = aggregate.drain(10);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].users.len(), MAX_RECORD_USERS);
    assert_eq!(records[1].users.len(), 10);
    let requests: u64 = records.iter().map(|r| r.requests).sum();
    assert_eq!(requests, 2 * (MAX_RECORD_USERS as u64 + 10));
    for record in &records {
        record.validate().unwrap();
    }
}

#[test]
fn a_request_finds_its_record_by_borrowed_key() {
    let mut aggregate = UsageAggregate::new(10);
    let (tenant, endpoint) = (String::from("a"), String::from("GET /x"));
    assert!(aggregate.record(&request(&tenant, &endpoint)));
    assert!(aggregate.record(&request(&tenant.clone(), &endpoint.clone())));
    // The parts are compared one by one: moving a byte between them is another key.
    assert!(aggregate.record(&request("aG", "ET /x")));
    assert!(aggregate.record(&request("aGET /", "x")));
    let records = aggregate.drain(10);
    let counts: Vec<(&str, &str, u64)> = records
        .iter()
        .map(|r| (r.tenant.as_str(), r.endpoint.as_str(), r.requests))
        .collect();
    assert_eq!(
        counts,
        [("a", "GET /x", 2), ("aG", "ET /x", 1), ("aGET /", "x", 1)]
    );
}

#[test]
fn labels_the_sidecar_would_refuse_are_dropped_and_counted() {
    let mut aggregate = UsageAggregate::new(10);
    let long = "t".repeat(MAX_LABEL_LEN + 1);
    for (tenant, endpoint) in [("{a}", "e"), ("a\n", "e"), (long.as_str(), "e"), ("a", "")] {
        assert!(!aggregate.record(&request(tenant, endpoint)), "{tenant:?}");
    }
    assert!(!aggregate.record(&RequestUsage {
        plan: Some("bad\u{7}"),
        ..request("a", "e")
    }));
    assert_eq!(aggregate.take_dropped(), 5);
    assert!(aggregate.is_empty());
    let mut log = RequestLog::new(10);
    assert!(!log.push(&request("{a}", "e"), 1));
    assert!(!log.push(&request("a", ""), 1));
    assert_eq!((log.len(), log.take_dropped()), (0, 2));
}

#[test]
fn the_request_log_keeps_entries_in_order_and_counts_what_overflows() {
    let mut log = RequestLog::new(3);
    assert!(log.is_empty());
    for (n, status) in [(1u64, 200u16), (2, 404), (3, 999), (4, 500)] {
        let usage = RequestUsage {
            status,
            user: Some(n),
            latency_ms: n,
            ..request("a", "GET *")
        };
        assert_eq!(log.push(&usage, 1_764_115_200_000 + n), n <= 3);
    }
    assert_eq!(log.take_dropped(), 1);
    assert_eq!(log.take_dropped(), 0);
    let first = log.drain(2);
    assert_eq!(log.len(), 1);
    assert_eq!(
        first[0],
        RequestLogEntry {
            time_ms: 1_764_115_200_001,
            tenant: "a".into(),
            endpoint: "GET *".into(),
            status: 200,
            bytes_in: 10,
            bytes_out: 100,
            latency_ms: 1,
            user: Some(1),
        }
    );
    assert_eq!(first[1].status, 404);
    let rest = log.drain(10);
    // Not a status (100 to 599): logged as "no response", so the batch stays valid.
    assert_eq!((rest[0].time_ms, rest[0].status), (1_764_115_200_003, 0));
    for entry in first.iter().chain(&rest) {
        entry.validate().unwrap();
    }
}

#[test]
fn batches_carry_records_and_log_entries_together_and_number_only_what_is_sent() {
    let mut buffer = UsageBuffer::new(7, 100, Some(2 * MAX_LOG_ENTRIES));
    assert!(buffer.next_batch().is_none());
    for n in 0..(MAX_LOG_ENTRIES as u64 + 5) {
        let full = buffer.record(&request("a", "GET *"), n);
        assert_eq!(full, n + 1 >= MAX_LOG_ENTRIES as u64);
    }
    let first = buffer.next_batch().unwrap();
    assert_eq!((first.sender, first.seq), (7, 1));
    assert_eq!(first.records[0].requests, MAX_LOG_ENTRIES as u64 + 5);
    assert_eq!(first.requests.len(), MAX_LOG_ENTRIES);
    assert_eq!(first.requests[0].time_ms, 0);
    first.validate().unwrap();
    // The rest of the log goes next, oldest first, even without records.
    let second = buffer.next_batch().unwrap();
    assert_eq!((second.seq, second.records.len()), (2, 0));
    let times: Vec<u64> = second.requests.iter().map(|e| e.time_ms).collect();
    assert_eq!(
        times,
        (MAX_LOG_ENTRIES as u64..MAX_LOG_ENTRIES as u64 + 5).collect::<Vec<_>>()
    );
    assert!(buffer.next_batch().is_none());
    buffer.record(&request("a", "GET *"), 9);
    assert_eq!(buffer.next_batch().unwrap().seq, 3);
    assert_eq!(buffer.take_dropped(), (0, 0));
}

#[test]
fn without_the_request_log_batches_are_as_before() {
    let mut buffer = UsageBuffer::new(7, 1, None);
    assert!(!buffer.record(&request("a", "1"), 5));
    assert!(!buffer.record(&request("a", "2"), 6)); // full: dropped
    assert_eq!(buffer.take_dropped(), (1, 0));
    let batch = buffer.next_batch().unwrap();
    assert!(batch.requests.is_empty());
    let json = serde_json::to_string(&batch).unwrap();
    assert!(!json.contains("\"requests\":["), "{json}");
}

#[test]
fn a_batch_never_exceeds_the_body_the_sidecar_accepts() {
    let tenant = "t".repeat(MAX_LABEL_LEN);
    let endpoint = "\"".repeat(MAX_LABEL_LEN); // escapes to twice its length
    let mut buffer = UsageBuffer::new(1, 2 * MAX_USAGE_RECORDS, Some(2 * MAX_LOG_ENTRIES));
    for n in 0..MAX_USAGE_RECORDS as u64 {
        let date = format_date(20_000 + (n % 16) as i64);
        let endpoint = format!("{}{n}", &endpoint[..MAX_LABEL_LEN - 4]);
        for user in 0..MAX_RECORD_USERS as u64 {
            let usage = RequestUsage {
                user: Some(u64::MAX - user),
                plan: Some(&tenant),
                date: &date,
                bytes_in: MAX_RECORD_COUNT / 512,
                ..request(&tenant, &endpoint)
            };
            buffer.aggregate.record(&usage);
        }
        buffer
            .log
            .as_mut()
            .unwrap()
            .push(&request(&tenant, &endpoint), u64::MAX);
    }
    let mut sent = (0, 0);
    while let Some(batch) = buffer.next_batch() {
        let json = serde_json::to_vec(&batch).unwrap();
        assert!(json.len() <= MAX_BATCH_BYTES, "{} bytes", json.len());
        batch.validate().unwrap();
        sent.0 += batch.records.len();
        sent.1 += batch.requests.len();
    }
    assert_eq!(sent, (MAX_USAGE_RECORDS, MAX_USAGE_RECORDS));
    assert_eq!(buffer.take_dropped(), (0, 0));
}
