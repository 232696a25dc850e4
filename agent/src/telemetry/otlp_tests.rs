use super::*;
use crate::telemetry::metrics::StepSample;

fn samples() -> PassSamples {
    PassSamples {
        steps: vec![
            StepSample {
                action: "pull".into(),
                result: "done".into(),
                started_ns: Some(1_000_000_500),
                took_ns: Some(200),
                ..Default::default()
            },
            StepSample {
                action: "start".into(),
                result: "failed".into(),
                container: Some("web".into()),
                error: Some("runc: exit 1".into()),
                started_ns: Some(1_000_000_800),
                took_ns: Some(100),
            },
            StepSample {
                action: "report".into(),
                result: "reported".into(),
                container: Some("db".into()),
                ..Default::default()
            },
        ],
        pulls: Vec::new(),
        trace_id: Some("0123456789abcdef0123456789abcdef".into()),
    }
}

fn ended(samples: &PassSamples) -> PassEnded<'_> {
    PassEnded {
        trigger: PassTrigger::Api,
        end: PassEnd::NotConverged,
        revision: Some("abc123"),
        message: Some("web: failed"),
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        took: Duration::from_micros(5),
        samples,
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[test]
fn a_pass_is_one_span_with_a_child_per_step_in_the_trace_its_process_reported() {
    let samples = samples();
    let spans = pass_spans(&ended(&samples));
    assert_eq!(spans.len(), 4);
    let pass = &spans[0];
    assert_eq!(pass.parent, None);
    assert_eq!(
        hex::encode(pass.trace_id),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!((pass.start, pass.end), (1_000_000_000, 1_000_005_000));
    assert_eq!(
        attr(pass, "berth.revision"),
        Some(&Value::Str("abc123".into()))
    );
    assert_eq!(attr(pass, "berth.trigger"), Some(&Value::Str("api".into())));
    assert_eq!(
        attr(pass, "berth.result"),
        Some(&Value::Str("not_converged".into()))
    );
    assert_eq!(
        pass.error, None,
        "a pass that did not converge is not an error"
    );
    for s in &spans[1..] {
        assert_eq!(s.parent, Some(pass.span_id));
        assert_eq!(s.trace_id, pass.trace_id);
        assert_ne!(s.span_id, pass.span_id);
    }
    let start = &spans[2];
    assert_eq!(start.name, "step start");
    assert_eq!((start.start, start.end), (1_000_000_800, 1_000_000_900));
    assert_eq!(
        attr(start, "berth.container"),
        Some(&Value::Str("web".into()))
    );
    assert_eq!(
        attr(start, "berth.action"),
        Some(&Value::Str("start".into()))
    );
    assert_eq!(
        attr(start, "berth.result"),
        Some(&Value::Str("failed".into()))
    );
    assert_eq!(
        attr(start, "berth.error"),
        None,
        "the error is the status's message, once"
    );
    assert_eq!(start.error.as_deref(), Some("runc: exit 1"));
    assert_eq!(
        attr(&spans[1], "berth.container"),
        None,
        "a pull is about no container"
    );
    // A step that did not run is a point at the pass's end.
    assert_eq!((spans[3].start, spans[3].end), (pass.end, pass.end));
}

#[test]
fn a_failed_pass_without_a_trace_gets_one_and_is_an_error() {
    let samples = PassSamples::default();
    let mut p = ended(&samples);
    p.end = PassEnd::Failed;
    p.revision = None;
    let spans = pass_spans(&p);
    assert_eq!(spans.len(), 1);
    assert_ne!(spans[0].trace_id, [0; 16]);
    assert_eq!(attr(&spans[0], "berth.revision"), None);
    assert_eq!(spans[0].error.as_deref(), Some("web: failed"));
}

#[test]
fn varints_and_fields_are_protobuf() {
    let mut v = Vec::new();
    varint(&mut v, 300);
    assert_eq!(v, [0xac, 0x02]);
    let mut v = Vec::new();
    key_value(&mut v, 9, "k", &Value::Int(-1));
    // KeyValue (field 9, LEN) { key "k"; value { int_value = -1 as 10-byte varint } }
    let mut want = vec![0x4a, 16, 0x0a, 1, b'k', 0x12, 11, 0x18];
    want.extend([0xff; 9]);
    want.push(0x01);
    assert_eq!(v, want);
}

#[test]
fn a_request_holds_the_resource_the_scope_and_each_span() {
    let samples = samples();
    let spans = pass_spans(&ended(&samples));
    let body = encode(&[("service.name", Value::Str("berth".into()))], &spans);
    // ExportTraceServiceRequest.resource_spans (1, LEN).
    assert_eq!(body[0], 0x0a);
    let text = String::from_utf8_lossy(&body);
    for needle in [
        "service.name",
        "reconcile pass",
        "step start",
        "berth.container",
        "runc: exit 1",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    let trace = spans[0].trace_id;
    let count = body
        .windows(18)
        .filter(|w| w[..2] == [0x0a, 16] && w[2..] == trace)
        .count();
    assert_eq!(
        count,
        spans.len(),
        "each span carries the trace id as field 1"
    );
}

#[test]
fn the_endpoint_gets_the_signal_path() {
    assert_eq!(
        traces_url("http://collector:4318").unwrap().as_str(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(
        traces_url("https://c.example/otel/").unwrap().as_str(),
        "https://c.example/otel/v1/traces"
    );
    assert!(traces_url("not a url").is_err());
    // A full traces URL (as in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is used unchanged.
    assert_eq!(
        traces_url("http://c:4318/v1/traces").unwrap().as_str(),
        "http://c:4318/v1/traces"
    );
    assert_eq!(
        traces_url("https://c.example/otel/v1/traces")
            .unwrap()
            .as_str(),
        "https://c.example/otel/v1/traces"
    );
    assert_eq!(
        shown(&url::Url::parse("http://u:secret@c:4318/v1/traces").unwrap()).as_str(),
        "http://c:4318/v1/traces"
    );
}

#[test]
fn spans_that_do_not_fit_in_the_queue_are_dropped_and_counted() {
    // A runtime nobody drives: the export task never takes a span out.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let ex = Exporter::start(rt.handle(), "http://127.0.0.1:9", 3, "n", metrics.clone()).unwrap();
    let samples = samples();
    ex.pass(&ended(&samples));
    let text = metrics.encode();
    assert!(
        text.contains("berth_otlp_spans_dropped_total{reason=\"queue_full\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("berth_otlp_spans_dropped_total{reason=\"timeout\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("berth_otlp_queue_spans 3\n"), "{text}");
}

#[test]
fn a_collector_that_refuses_the_connection_drops_the_batch_and_counts_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = Arc::new(Metrics::new());
    let endpoint = format!("http://127.0.0.1:{port}");
    let ex = Exporter::start(rt.handle(), &endpoint, 16, "n", metrics.clone()).unwrap();
    let samples = samples();
    ex.pass(&ended(&samples));
    rt.block_on(async {
        for _ in 0..200 {
            if metrics
                .encode()
                .contains("berth_otlp_spans_dropped_total{reason=\"export_failed\"} 4\n")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not counted: {}", metrics.encode());
    });
    assert!(metrics.encode().contains("berth_otlp_queue_spans 0\n"));
}

#[test]
fn an_endpoint_that_cannot_be_used_is_named_without_its_password() {
    for bad in [
        "http://u:s3cret@127.0.0.1:99999",
        "http://u:s3cret@bad host:4318",
    ] {
        let e = traces_url(bad).unwrap_err();
        let text = format!("{e} {:?}", e);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("invalid OTLP endpoint"), "{text}");
    }
}

#[test]
fn a_pass_that_did_not_converge_says_why() {
    let samples = samples();
    let spans = pass_spans(&ended(&samples));
    assert_eq!(
        attr(&spans[0], "berth.message"),
        Some(&Value::Str("web: failed".into()))
    );
    let long = "x".repeat(MESSAGE_MAX + 10);
    let mut p = ended(&samples);
    p.end = PassEnd::Failed;
    p.message = Some(&long);
    let spans = pass_spans(&p);
    // A failed pass's message is its status's, once.
    assert_eq!(attr(&spans[0], "berth.message"), None);
    let m = spans[0].error.as_deref().expect("an error");
    assert_eq!(m.len(), MESSAGE_MAX + "…".len());
    let mut p = ended(&samples);
    p.end = PassEnd::Converged;
    assert_eq!(attr(&pass_spans(&p)[0], "berth.message"), None);
}

#[test]
fn a_collector_whose_answer_never_ends_is_not_read_beyond_a_prefix() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // 200, then a chunked body without end: written until the agent hangs up.
    let (written_tx, written_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = [0u8; 4096];
        let _ = c.read(&mut request);
        let mut written: u64 = 0;
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ntransfer-encoding: chunked\r\n\r\n";
        if c.write_all(head).is_ok() {
            let mut chunk = b"10000\r\n".to_vec();
            chunk.extend(std::iter::repeat_n(b'x', 0x10000));
            chunk.extend_from_slice(b"\r\n");
            while c.write_all(&chunk).is_ok() {
                written += chunk.len() as u64;
            }
        }
        let _ = written_tx.send(written);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let ex = Exporter::start(rt.handle(), &endpoint, 16, "n", metrics.clone()).unwrap();
    let samples = samples();
    ex.pass(&ended(&samples));
    // Exported by its status, well before EXPORT_TIMEOUT: the body is not waited for.
    rt.block_on(async {
        for _ in 0..200 {
            if metrics
                .encode()
                .contains("berth_otlp_spans_exported_total 4\n")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not counted in 5 s: {}", metrics.encode());
    });
    // The connection was closed: the collector's writes failed after a few socket
    // buffers, not gigabytes.
    let written = written_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the agent kept reading");
    assert!(written < 64 * 1024 * 1024, "{written} bytes read");
}

#[test]
fn each_string_of_a_span_is_capped_and_an_error_is_there_once() {
    // A registry's 64 KiB of error detail, a name of multibyte characters.
    let long_error = "e".repeat(64 * 1024);
    let long_name = "é".repeat(4 * 1024);
    let mut samples = samples();
    for step in &mut samples.steps {
        step.error = Some(long_error.clone());
        step.container = Some(long_name.clone());
        step.action = long_name.clone();
    }
    let long_message = "m".repeat(64 * 1024);
    let mut p = ended(&samples);
    p.message = Some(&long_message);
    let spans = pass_spans(&p);
    for s in &spans {
        for (key, value) in &s.attributes {
            if let Value::Str(v) = value {
                assert!(
                    v.len() <= MESSAGE_MAX + "…".len(),
                    "{key}: {} bytes",
                    v.len()
                );
            }
        }
        if let Some(e) = &s.error {
            assert_eq!(e.len(), MESSAGE_MAX + "…".len());
            assert!(e.ends_with('…'));
        }
    }
    let start = &spans[2];
    let Some(Value::Str(c)) = attr(start, "berth.container") else {
        panic!("no berth.container");
    };
    assert!(c.ends_with("é…"), "cut on a character boundary");
    assert_eq!(attr(start, "berth.error"), None);
    assert!(start.error.is_some());
    // The request stays small: about 1 KiB a string, not the 64 KiB given.
    let body = encode(&[], &spans);
    assert!(body.len() < spans.len() * 6 * 1024, "{} bytes", body.len());
}
