//! The receiver's checks: signatures against known vectors, ref matching, the rate
//! limits (pure); then the body cap, the limits and the trigger over loopback TCP.

use super::check::*;
use super::*;
use hyper::header::HeaderMap;
use std::io::{Read, Write};
use std::sync::mpsc::Receiver;

/// GitHub's documented example: this secret, body `Hello, World!`.
const DOC_SECRET: &str = "It's a Secret to Everybody";
const DOC_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// A push to `main`, and its signature under [`DOC_SECRET`], pinned with
/// `printf '%s' '{"ref":"refs/heads/main"}' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"`.
const PUSH: &str = r#"{"ref":"refs/heads/main"}"#;
const PUSH_SIG: &str = "6a42699496d8c4fb346af1c930df527931a321e28ada69dbc5ee82f438517fd2";

fn secret() -> Secret {
    Secret::new(DOC_SECRET.as_bytes())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("header value"));
    }
    h
}

fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

fn status_of(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Refused { status, .. } => Some(status.as_u16()),
        _ => None,
    }
}

#[test]
fn github_signatures_are_checked_against_the_documented_vector() {
    let s = secret();
    let body = b"Hello, World!";
    let sig = format!("sha256={DOC_SIG}");
    let ok = authenticate(&headers(&[("x-hub-signature-256", &sig)]), body, &s);
    assert_eq!(ok, Ok(Forge::GitHub));
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", DOC_SIG.to_uppercase());
    assert!(authenticate(&headers(&[("x-hub-signature-256", &upper)]), body, &s).is_ok());
    // One digit changed, a shortened tag, another body, another secret, no prefix.
    let mut flipped = DOC_SIG.to_string();
    flipped.replace_range(0..1, "8");
    for (sig, body, key) in [
        (format!("sha256={flipped}"), &body[..], DOC_SECRET),
        (format!("sha256={}", &DOC_SIG[..62]), &body[..], DOC_SECRET),
        (
            format!("sha256={DOC_SIG}"),
            &b"Hello, World?"[..],
            DOC_SECRET,
        ),
        (format!("sha256={DOC_SIG}"), &body[..], "another secret"),
        (DOC_SIG.to_string(), &body[..], DOC_SECRET),
        ("sha256=zz".to_string(), &body[..], DOC_SECRET),
    ] {
        let v = authenticate(
            &headers(&[("x-hub-signature-256", &sig)]),
            body,
            &Secret::new(key.as_bytes()),
        )
        .expect_err(&sig);
        assert_eq!(status_of(&v), Some(401), "{sig}: {v:?}");
        // The refusal never repeats the signature.
        assert!(!format!("{v:?}").contains(&DOC_SIG[..16]), "{v:?}");
    }
}

#[test]
fn gitea_forgejo_and_gitlab_are_checked_and_anything_unsigned_is_refused() {
    let s = secret();
    let body = PUSH.as_bytes();
    assert_eq!(
        authenticate(&headers(&[("x-gitea-signature", PUSH_SIG)]), body, &s),
        Ok(Forge::Gitea)
    );
    // Forgejo sends both its own and Gitea's headers.
    let both = headers(&[
        ("x-forgejo-signature", PUSH_SIG),
        ("x-gitea-signature", PUSH_SIG),
    ]);
    assert_eq!(authenticate(&both, body, &s), Ok(Forge::Forgejo));
    let forged = headers(&[("x-gitea-signature", &PUSH_SIG.replace('6', "7"))]);
    assert_eq!(
        status_of(&authenticate(&forged, body, &s).expect_err("forged")),
        Some(401)
    );
    // GitLab: the token itself, compared whole.
    assert_eq!(
        authenticate(&headers(&[("x-gitlab-token", DOC_SECRET)]), body, &s),
        Ok(Forge::GitLab)
    );
    for wrong in [
        "It's a Secret",
        "It's a Secret to Everybody!",
        "it's a secret to everybody",
        "",
    ] {
        let v = authenticate(&headers(&[("x-gitlab-token", wrong)]), body, &s).expect_err(wrong);
        assert_eq!(status_of(&v), Some(401), "{wrong:?}");
        assert!(!format!("{v:?}").contains("Secret to"), "{v:?}");
    }
    // A GitLab token that is wrong is not saved by a good signature beside it.
    let mixed = headers(&[
        ("x-gitlab-token", "nope"),
        ("x-hub-signature-256", &format!("sha256={PUSH_SIG}")),
    ]);
    assert!(authenticate(&mixed, body, &s).is_err());
    let v = authenticate(&headers(&[("x-github-event", "push")]), body, &s).expect_err("unsigned");
    assert_eq!(status_of(&v), Some(401));
    assert!(format!("{v:?}").contains("unsigned"), "{v:?}");
}

#[test]
fn only_a_push_to_the_followed_ref_is_acted_on() {
    assert_eq!(followed(&main_branch(), "refs/heads/main"), Ok(()));
    for other in [
        "refs/heads/mainline",
        "refs/heads/feature/main",
        "refs/tags/main",
        "main",
    ] {
        assert!(followed(&main_branch(), other).is_err(), "{other}");
    }
    let tag = GitRef::Tag("v1.2".into());
    assert_eq!(followed(&tag, "refs/tags/v1.2"), Ok(()));
    assert!(followed(&tag, "refs/heads/v1.2").is_err());
    let pinned = GitRef::Commit("abc1234".into());
    let why = followed(&pinned, "refs/heads/main").expect_err("pinned");
    assert!(why.contains("never moves"), "{why}");

    let s = secret();
    let github = |event: &str| {
        headers(&[
            ("x-hub-signature-256", &format!("sha256={PUSH_SIG}")),
            ("x-github-event", event),
        ])
    };
    assert_eq!(
        judge(&github("push"), PUSH.as_bytes(), &s, &main_branch()),
        Verdict::Push {
            forge: Forge::GitHub,
            git_ref: "refs/heads/main".into()
        }
    );
    // A ping, another event, another branch, a pinned commit: ignored.
    for (h, r) in [
        (github("ping"), main_branch()),
        (github("issues"), main_branch()),
        (github("push"), GitRef::Branch("prod".into())),
        (github("push"), pinned.clone()),
        (
            headers(&[("x-hub-signature-256", &format!("sha256={PUSH_SIG}"))]),
            main_branch(),
        ),
    ] {
        let v = judge(&h, PUSH.as_bytes(), &s, &r);
        assert!(matches!(v, Verdict::Ignored(_)), "{h:?}: {v:?}");
    }
    let gitlab =
        |event: &str| headers(&[("x-gitlab-token", DOC_SECRET), ("x-gitlab-event", event)]);
    assert!(matches!(
        judge(&gitlab("Push Hook"), PUSH.as_bytes(), &s, &main_branch()),
        Verdict::Push {
            forge: Forge::GitLab,
            ..
        }
    ));
    let tag_push = br#"{"ref":"refs/tags/v1.2","object_kind":"tag_push"}"#;
    assert!(matches!(
        judge(&gitlab("Tag Push Hook"), tag_push, &s, &tag),
        Verdict::Push { .. }
    ));
    assert!(matches!(
        judge(
            &gitlab("Merge Request Hook"),
            PUSH.as_bytes(),
            &s,
            &main_branch()
        ),
        Verdict::Ignored(_)
    ));
    // Signed, a push, but no `ref`: a bad request.
    let v = judge(&gitlab("Push Hook"), b"{}", &s, &main_branch());
    assert_eq!(status_of(&v), Some(400), "{v:?}");
}

#[test]
fn the_request_bucket_allows_a_burst_then_one_a_second() {
    let t0 = Instant::now();
    let mut b = Bucket::new(REQUESTS_BURST, REQUESTS_PER_SECOND, t0);
    for i in 0..REQUESTS_BURST {
        assert!(b.take(t0), "request {i} of the burst");
    }
    assert!(!b.take(t0));
    assert!(!b.take(t0 + Duration::from_millis(900)));
    assert!(b.take(t0 + Duration::from_millis(1000)));
    assert!(!b.take(t0 + Duration::from_millis(1500)));
    // A long quiet time refills the burst, no more.
    let later = t0 + Duration::from_secs(3600);
    let taken = (0..100).filter(|_| b.take(later)).count();
    assert_eq!(taken, REQUESTS_BURST as usize);
}

#[test]
fn valid_pushes_fetch_at_most_once_a_second_and_none_is_dropped() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut p = Pacer::default();
    assert_eq!(p.admit(t0), Pace::Now);
    assert_eq!(p.admit(ms(200)), Pace::After(Duration::from_millis(800)));
    // The fetch due at 1 s covers a push made before it.
    assert_eq!(p.admit(ms(500)), Pace::Pending);
    assert_eq!(p.admit(ms(1100)), Pace::After(Duration::from_millis(900)));
    assert_eq!(p.admit(ms(3000)), Pace::Now);
}

#[test]
fn refusals_for_the_rate_are_logged_once_a_second_with_a_count() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut l = LogPacer::default();
    assert_eq!(l.admit(t0), Some(0));
    assert_eq!(l.admit(ms(10)), None);
    assert_eq!(l.admit(ms(999)), None);
    assert_eq!(l.admit(ms(1000)), Some(2));
    assert_eq!(l.admit(ms(5000)), Some(0));
}

#[test]
fn the_secret_file_loses_one_trailing_newline_and_is_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |text: &[u8]| {
        let p = dir.path().join("secret");
        std::fs::write(&p, text).expect("write");
        Secret::load(&p)
    };
    assert_eq!(&*load(b"s3cret\n").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret\r\n").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret").expect("load").0, b"s3cret");
    assert_eq!(&*load(b"s3cret\n\n").expect("load").0, b"s3cret\n");
    let s = load(b"s3cret\n").expect("load");
    assert!(!format!("{s:?}").contains("s3cret"));
    let e = load(b"\n").expect_err("empty");
    assert!(matches!(e, WebhookError::EmptySecret { .. }), "{e}");
    let e = Secret::load(&dir.path().join("missing")).expect_err("missing");
    assert!(e.to_string().contains("source.webhook.secret_file"), "{e}");
}

/// A receiver on a loopback port following `main`, with the controller's channel.
struct Served {
    rt: tokio::runtime::Runtime,
    server: Option<WebhookServer>,
    rx: Receiver<Trigger>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("webhook.secret");
        std::fs::write(&secret_file, format!("{DOC_SECRET}\n")).expect("write");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (handle, rx) = crate::reconcile::controller::channel(dir.path(), Default::default());
        let webhook = Webhook {
            listen: "127.0.0.1:0".into(),
            secret_file,
        };
        let server = start(rt.handle(), handle, &webhook, &main_branch()).expect("start");
        Served {
            rt,
            server: Some(server),
            rx,
            _dir: dir,
        }
    }

    /// Sends `head` (request line and headers, without the blank line) and `body`;
    /// the status and the answer's body.
    fn send(&self, head: &str, body: &[u8]) -> (u16, String) {
        let addr = self.server.as_ref().expect("server").local_addr();
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(format!("{head}\r\nHost: x\r\n\r\n").as_bytes())
            .expect("write head");
        // The server may answer and close before taking all of a refused body.
        let _ = c.write_all(body);
        // What came before a reset (the server closes with a refused body unread).
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn push(&self, sig: &str, body: &str) -> (u16, String) {
        self.send(
            &format!(
                "POST {PATH} HTTP/1.1\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={sig}\r\nContent-Length: {}",
                body.len()
            ),
            body.as_bytes(),
        )
    }

    /// The triggers sent so far.
    fn triggers(&self) -> Vec<String> {
        self.rx
            .try_iter()
            .map(|t| match t {
                Trigger::SourceChanged(why) => why,
                other => format!("{other:?}"),
            })
            .collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.server.take();
    }
}

#[test]
fn over_loopback_a_signed_push_triggers_a_fetch_and_refusals_trigger_none() {
    let s = Served::start();
    let (status, body) = s.push(PUSH_SIG, PUSH);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"accepted\""), "{body}");
    assert_eq!(s.triggers(), ["webhook: push to refs/heads/main (github)"]);
    // Forged, unsigned, a GitLab token that is wrong: 401, no trigger.
    let forged = PUSH_SIG.replace('a', "b");
    assert_eq!(s.push(&forged, PUSH).0, 401);
    let len = PUSH.len();
    let unsigned = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-GitHub-Event: push\r\nContent-Length: {len}"),
        PUSH.as_bytes(),
    );
    assert_eq!(unsigned.0, 401, "{}", unsigned.1);
    let gitlab = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: guess\r\nContent-Length: {len}"),
        PUSH.as_bytes(),
    );
    assert_eq!(gitlab.0, 401);
    // Elsewhere, or not a POST.
    assert_eq!(
        s.send("POST /hook HTTP/1.1\r\nContent-Length: 0", b"").0,
        404
    );
    assert_eq!(s.send(&format!("GET {PATH} HTTP/1.1"), b"").0, 405);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.triggers(), Vec::<String>::new());
}

#[test]
fn a_body_over_the_cap_is_refused_whether_declared_or_streamed() {
    let s = Served::start();
    let big = MAX_BODY + 1;
    let (status, body) = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Hub-Signature-256: sha256={PUSH_SIG}\r\nContent-Length: {big}"),
        b"{",
    );
    assert_eq!(status, 413, "{body}");
    // Chunked, with no length given: cut at the cap.
    let chunk = vec![b' '; 64 * 1024];
    let mut stream = Vec::new();
    for _ in 0..17 {
        stream.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        stream.extend_from_slice(&chunk);
        stream.extend_from_slice(b"\r\n");
    }
    stream.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = s.send(
        &format!("POST {PATH} HTTP/1.1\r\nX-Hub-Signature-256: sha256={PUSH_SIG}\r\nTransfer-Encoding: chunked"),
        &stream,
    );
    assert_eq!(status, 413, "{body}");
    // Just under the cap is read (and then judged: this one is not signed right).
    let padded = format!(
        "{PUSH}{}",
        " ".repeat(usize::try_from(MAX_BODY).expect("cap") - PUSH.len())
    );
    assert_eq!(s.push(PUSH_SIG, &padded).0, 401);
    assert_eq!(s.triggers(), Vec::<String>::new());
}

#[test]
fn a_flood_is_refused_before_any_check_and_pushes_are_paced() {
    let s = Served::start();
    // The burst: the first valid push fetches now, the next ones once the second is up.
    let answers: Vec<u16> = (0..REQUESTS_BURST)
        .map(|_| s.push(PUSH_SIG, PUSH).0)
        .collect();
    assert!(answers.iter().all(|c| *c == 202), "{answers:?}");
    let (status, body) = s.push(PUSH_SIG, PUSH);
    assert_eq!(status, 429, "{body}");
    let forged = s.push("00", PUSH);
    assert_eq!(forged.0, 429, "the limit comes before the signature check");
    // Refused for the rate: logged once a second, not once each.
    for _ in 0..5 {
        assert_eq!(s.push(PUSH_SIG, PUSH).0, 429);
    }
    assert_eq!(s.triggers().len(), 1, "a fetch at once");
    std::thread::sleep(Duration::from_millis(1300));
    // The pushes of that second: one more fetch, at its end.
    assert_eq!(s.triggers().len(), 1);
    assert_eq!(s.push(PUSH_SIG, PUSH).0, 202, "refilled");
}
