//! Hostile input: Sage People records of every bad shape we could think of, served by the
//! simulator verbatim, and raw messages published straight onto the worker subject. Each kind
//! must end loaded, skipped (counted on the run, the reason logged) or dead-lettered with a
//! reason — never lost, never looping: the run completes and is finalized once, the work
//! stream drains and stays drained.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use peoplesync_bus::{DeadLetterRecord, RunRecord, codec, names};
use peoplesync_proto::v1::{Worker, WorkerEvent, WorkerEventKind};
use peoplesync_sims::generate;
use serde_json::{Map, Value, json};

use super::{EXTRACTOR, Stack, loader_config, org};
use peoplesync_testkit::stack::{Deployment, oomnitza_config};

/// What became of one kind of bad input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// In Oomnitza.
    Loaded,
    /// Dead-lettered with a reason.
    Lettered,
    /// Left out by the extractor, counted as skipped on the run.
    Skipped,
}

use Fate::{Lettered, Loaded, Skipped};

/// Workers in the org; the corpus replaces some of them. Pages of 10: the last record of a
/// page (index 9, 19, …) gives the next marker, so it keeps a valid id.
const ORG: u64 = 200;

/// One bad Sage People record: which worker it replaces, what is served, what may become of
/// it, and a check of what reached Oomnitza when it is loaded.
struct Record {
    name: &'static str,
    raw: Value,
    fates: &'static [Fate],
    check: Option<(&'static str, Option<&'static str>)>,
}

fn email(n: usize) -> String {
    format!("chaos-{n}@corpus.example")
}

/// A generated record at `index` with `edit` applied.
fn edited(index: u64, edit: Edit) -> Value {
    let mut raw = generate::worker(42, index);
    if let Some(object) = raw.as_object_mut() {
        object.insert("emailAddress".into(), json!(email(index as usize)));
        edit(object);
    }
    raw
}

fn deep(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "d": inner }))
}

/// Changes one generated record into a bad one.
type Edit = Box<dyn FnOnce(&mut Map<String, Value>)>;

/// A kind of bad record before it is placed in the org.
struct Kind {
    name: &'static str,
    edit: Edit,
    fates: &'static [Fate],
    check: Option<(&'static str, Option<&'static str>)>,
}

fn kind(name: &'static str, edit: Edit, fates: &'static [Fate]) -> Kind {
    Kind {
        name,
        edit,
        fates,
        check: None,
    }
}

impl Kind {
    /// When loaded, Oomnitza's `field` must hold `value` (`None`: nothing).
    fn holds(mut self, field: &'static str, value: Option<&'static str>) -> Kind {
        self.check = Some((field, value));
        self
    }
}

/// Sets top-level `key` to `value`.
fn set(key: &'static str, value: Value) -> Edit {
    Box::new(move |o: &mut Map<String, Value>| {
        o.insert(key.into(), value);
    })
}

/// Sets `currentEmployment.<key>` to `value`.
fn job(key: &'static str, value: Value) -> Edit {
    Box::new(move |o: &mut Map<String, Value>| {
        match o
            .get_mut("currentEmployment")
            .and_then(Value::as_object_mut)
        {
            Some(e) => {
                e.insert(key.into(), value);
            }
            None => {
                o.insert("currentEmployment".into(), json!({ key: value }));
            }
        }
    })
}

/// Replaces the whole record (`edit` is not applied to a generated one).
fn whole(value: Value) -> Edit {
    Box::new(move |o: &mut Map<String, Value>| {
        o.clear();
        o.insert(WHOLE.into(), value);
    })
}

/// Marks a record replaced as a whole by [`whole`].
const WHOLE: &str = "__whole__";

/// The record corpus, in the order of the indices they replace.
fn records() -> Vec<Record> {
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("Extra {i}"), "value": i}))
        .collect();
    let unknown: Map<String, Value> = (0..300)
        .map(|i| (format!("unknownField{i}"), json!(i)))
        .collect();
    let mail = |m: &str| set("emailAddress", json!(m));
    let kinds = vec![
        kind(
            "e-mail with spaces around it",
            mail("  pad@corpus.example  "),
            &[Loaded],
        )
        .holds("EMAIL", Some("pad@corpus.example")),
        kind("e-mail in capitals", mail("CAPS@CORPUS.EXAMPLE"), &[Loaded])
            .holds("EMAIL", Some("CAPS@CORPUS.EXAMPLE")),
        kind("e-mail null", set("emailAddress", Value::Null), &[Lettered]),
        kind("e-mail empty", mail(""), &[Lettered]),
        kind("e-mail blank", mail("   \t "), &[Lettered]),
        kind(
            "e-mail a number",
            set("emailAddress", json!(12345)),
            &[Loaded, Lettered],
        ),
        kind(
            "e-mail an object",
            set("emailAddress", json!({"v": "o@corpus.example"})),
            &[Lettered],
        ),
        kind(
            "e-mail an array",
            set("emailAddress", json!(["a@corpus.example"])),
            &[Lettered],
        ),
        kind(
            "e-mail without @",
            mail("not-an-email"),
            &[Loaded, Lettered],
        ),
        kind(
            "e-mail of 300 characters",
            mail(&format!("{}@corpus.example", "l".repeat(285))),
            &[Loaded, Lettered],
        ),
        kind(
            "e-mail with non-ASCII letters",
            mail("jürgen.müller@exämple.corpus"),
            &[Loaded, Lettered],
        ),
        kind(
            "e-mail with CR LF and a header",
            mail("crlf@corpus.example\r\nX-Injected: 1"),
            &[Loaded, Lettered],
        ),
        kind(
            "e-mail with a NUL",
            mail("nul\u{0}byte@corpus.example"),
            &[Loaded, Lettered],
        ),
        kind("e-mail only a NUL", mail("\u{0}"), &[Lettered]),
        kind(
            "first name with a NUL",
            set("firstName", json!("Ada\u{0}Lovelace")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("AdaLovelace")),
        kind(
            "last name with BEL",
            set("lastName", json!("\u{7}Bell")),
            &[Loaded],
        )
        .holds("LAST_NAME", Some("Bell")),
        kind(
            "first name with an RTL override",
            set("firstName", json!("\u{202E}evil")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("evil")),
        kind(
            "first name with CR LF",
            set("firstName", json!("Line\r\nBreak")),
            &[Loaded],
        ),
        kind(
            "first name with emoji",
            set("firstName", json!("👩‍💻 Zoë")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("👩‍💻 Zoë")),
        kind(
            "first name with combining marks",
            set("firstName", json!("Z̴̡a̷l̸g̵o̶")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("Z̴̡a̷l̸g̵o̶")),
        kind(
            "first name a template",
            set("firstName", json!("{{ response.id }}")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("{{ response.id }}")),
        kind(
            "first name HTML",
            set("firstName", json!("<script>alert(1)</script>")),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("<script>alert(1)</script>")),
        kind(
            "first name a boolean",
            set("firstName", json!(true)),
            &[Loaded],
        )
        .holds("FIRST_NAME", Some("true")),
        kind(
            "first name blank",
            set("firstName", json!("   ")),
            &[Loaded],
        )
        .holds("FIRST_NAME", None),
        kind(
            "last name of 10 KB",
            set("lastName", json!("L".repeat(10_000))),
            &[Loaded, Lettered],
        ),
        kind(
            "department of 200 KB",
            set("hrDepartment", json!("D".repeat(200_000))),
            &[Loaded, Lettered],
        ),
        // More than NATS takes in one message: skipped by the extractor with a dead letter.
        kind(
            "department of 1.2 MB",
            set("hrDepartment", json!("D".repeat(1_200_000))),
            &[Lettered],
        ),
        kind(
            "employment null",
            set("currentEmployment", Value::Null),
            &[Loaded],
        )
        .holds("POSITION", None),
        kind(
            "employment a string",
            set("currentEmployment", json!("boss")),
            &[Loaded],
        )
        .holds("POSITION", None),
        kind(
            "employment active a string",
            job("active", json!("yes")),
            &[Loaded],
        ),
        kind(
            "start date not a date",
            job("startDate", json!("not a date")),
            &[Loaded, Lettered],
        ),
        kind(
            "start date 30 February",
            job("startDate", json!("2026-02-30")),
            &[Loaded, Lettered],
        ),
        kind(
            "end date before start date",
            job("endDate", json!("1900-01-01")),
            &[Loaded, Lettered],
        ),
        kind("job title a number", job("jobTitle", json!(42)), &[Loaded])
            .holds("POSITION", Some("42")),
        kind(
            "work address an array",
            set("workAddress", json!([1, 2])),
            &[Loaded],
        ),
        kind(
            "country a number",
            set("workAddress", json!({"country": 44, "postalCode": 1.5})),
            &[Loaded],
        ),
        kind(
            "additional fields an object",
            set("additionalFields", json!({"x": 1})),
            &[Loaded],
        ),
        kind(
            "a thousand additional fields",
            set("additionalFields", Value::Array(many)),
            &[Loaded],
        ),
        kind("JSON nested 100 deep", set("extra", deep(100)), &[Loaded]),
        kind(
            "300 unknown fields",
            Box::new(move |o: &mut Map<String, Value>| o.extend(unknown)),
            &[Loaded],
        ),
        // Without a usable id: skipped by the extractor (a number is read as text). An id that
        // cannot be a subject token or key: skipped too, never loaded outside its run.
        kind(
            "no id",
            Box::new(|o: &mut Map<String, Value>| {
                o.remove("id");
            }),
            &[Skipped],
        ),
        kind("id a number", set("id", json!(12345)), &[Loaded]),
        kind("id empty", set("id", json!("")), &[Skipped]),
        kind("record a string", whole(json!("just a string")), &[Skipped]),
        kind("record an array", whole(json!([1, 2, 3])), &[Skipped]),
        kind("record null", whole(Value::Null), &[Skipped]),
        kind(
            "id with a space",
            set("id", json!("a2G bad id")),
            &[Skipped, Lettered],
        ),
        kind(
            "id with a dot",
            set("id", json!("a2G.dotted")),
            &[Skipped, Lettered],
        ),
        kind(
            "id a subject wildcard",
            set("id", json!("a2G>")),
            &[Skipped, Lettered],
        ),
        kind(
            "id of 200 characters",
            set("id", json!("a".repeat(200))),
            &[Skipped, Lettered],
        ),
    ];
    kinds
        .into_iter()
        .zip(corpus_indices())
        .map(|(kind, at)| {
            let mut raw = edited(at, kind.edit);
            if let Some(whole) = raw.get(WHOLE) {
                raw = whole.clone();
            }
            Record {
                name: kind.name,
                raw,
                fates: kind.fates,
                check: kind.check,
            }
        })
        .collect()
}

/// The indices the corpus replaces: never the last of a page of ten, whose id is the marker.
fn corpus_indices() -> impl Iterator<Item = u64> {
    (1..ORG).filter(|i| i % 10 != 9)
}

/// One raw message for the worker subject: its payload and dedup id, and what may become of
/// it.
struct Message {
    name: &'static str,
    payload: Bytes,
    msg_id: Option<String>,
    /// The worker id a letter or user would carry (besides `seq-<sequence>`).
    worker: Option<String>,
    email: Option<String>,
    fates: &'static [Fate],
}

fn event(run: &str, worker: Option<Worker>) -> WorkerEvent {
    WorkerEvent {
        event_id: format!("corpus-{run}"),
        integration_id: "sage-people".into(),
        run_id: run.to_owned(),
        kind: WorkerEventKind::Upsert.into(),
        worker,
        raw: b"{}".to_vec().into(),
        ..Default::default()
    }
}

fn worker(id: &str, email: Option<&str>) -> Worker {
    Worker {
        id: id.to_owned(),
        email: email.map(str::to_owned),
        ..Default::default()
    }
}

/// The raw-message corpus. Well-formed ones belong to a run nobody started.
fn messages() -> Vec<Message> {
    const RUN: &str = "chaos-injected-run";
    let good = |n: usize| worker(&format!("a2GINJECT{n:04}"), Some(&email(1000 + n)));
    let valid = event(RUN, Some(good(1)));
    let encoded = codec::encode_worker_event(&valid);
    let mut m = Vec::new();
    let mut push = |name, payload: Bytes, msg_id: Option<&str>, w: Option<&Worker>, fates| {
        m.push(Message {
            name,
            payload,
            msg_id: msg_id.map(str::to_owned),
            worker: w.map(|w| w.id.clone()),
            email: w.and_then(|w| w.email.clone()),
            fates,
        });
    };
    let bytes = |e: &WorkerEvent| codec::encode_worker_event(e);
    push("empty payload", Bytes::new(), None, None, &[Lettered]);
    push(
        "random bytes",
        Bytes::from_static(b"\xff\x00\xfe garbage \x01"),
        None,
        None,
        &[Lettered],
    );
    push(
        "JSON instead of protobuf",
        Bytes::from_static(br#"{"run_id":"r","worker":{"id":"x"}}"#),
        Some("json.payload"),
        None,
        &[Lettered],
    );
    push(
        "a truncated event",
        encoded.slice(..encoded.len() / 2),
        Some("truncated"),
        None,
        &[Lettered],
    );
    push(
        "dedup id without a dot",
        Bytes::from_static(b"\x0a"),
        Some("nodot"),
        None,
        &[Lettered],
    );
    for (name, run) in [
        ("run id empty", ""),
        ("run id with a space", "run with space"),
        ("run id with a dot", "run.dotted"),
        ("run id a wildcard", ">"),
        ("run id with a NUL", "run\u{0}nul"),
    ] {
        push(
            name,
            bytes(&event(run, Some(good(2)))),
            None,
            None,
            &[Lettered],
        );
    }
    push(
        "run id of 200 characters",
        bytes(&event(&"r".repeat(200), Some(good(3)))),
        None,
        None,
        &[Lettered],
    );
    push(
        "no worker",
        bytes(&event(RUN, None)),
        None,
        None,
        &[Lettered],
    );
    push(
        "worker id empty",
        bytes(&event(
            RUN,
            Some(worker("", Some("empty-id@corpus.example"))),
        )),
        None,
        None,
        &[Lettered],
    );
    push(
        "worker id with a space",
        bytes(&event(
            RUN,
            Some(worker("a2G space", Some("space-id@corpus.example"))),
        )),
        None,
        None,
        &[Lettered],
    );
    push(
        "worker id a wildcard",
        bytes(&event(
            RUN,
            Some(worker("*", Some("star-id@corpus.example"))),
        )),
        None,
        None,
        &[Lettered],
    );
    let w = good(4);
    let mut unknown_kind = event(RUN, Some(w.clone()));
    unknown_kind.kind = 99;
    push(
        "unknown event kind",
        bytes(&unknown_kind),
        None,
        Some(&w),
        &[Lettered],
    );
    let w = good(12);
    let mut unspecified = event(RUN, Some(w.clone()));
    unspecified.kind = 0;
    push(
        "event kind unspecified",
        bytes(&unspecified),
        None,
        Some(&w),
        &[Lettered],
    );
    let w = good(5);
    let mut other = event(RUN, Some(w.clone()));
    other.integration_id = "another-integration".into();
    push(
        "another integration's id",
        bytes(&other),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    let w = good(6);
    push(
        "a run nobody started",
        bytes(&event(RUN, Some(w.clone()))),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    let w = good(7);
    let mut raw_bad = event(RUN, Some(w.clone()));
    raw_bad.raw = b"{not json".to_vec().into();
    push(
        "raw record not JSON",
        bytes(&raw_bad),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    let w = good(8);
    let mut raw_array = event(RUN, Some(w.clone()));
    raw_array.raw = b"[1,2,3]".to_vec().into();
    push(
        "raw record an array",
        bytes(&raw_array),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    let w = worker("a2GINJECT0009", None);
    push(
        "worker without e-mail",
        bytes(&event(RUN, Some(w.clone()))),
        None,
        Some(&w),
        &[Lettered],
    );
    let w = worker("a2GINJECT0010", Some("ctl\u{7}\u{202E}@corpus.example"));
    push(
        "worker e-mail with control characters",
        bytes(&event(RUN, Some(w.clone()))),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    let w = good(11);
    let mut huge = event(RUN, Some(w.clone()));
    huge.raw = serde_json::to_vec(&json!({"big": "B".repeat(900_000)}))
        .unwrap_or_default()
        .into();
    push(
        "an event of 900 KB",
        bytes(&huge),
        None,
        Some(&w),
        &[Loaded, Lettered],
    );
    m
}

fn find_user<'a>(
    users: &'a [Map<String, Value>],
    worker: &str,
    email: Option<&str>,
) -> Option<&'a Map<String, Value>> {
    users.iter().find(|u| {
        u.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(peoplesync_core::defaults::SAGE_USER_ID_FIELD)
                && v.as_str() == Some(worker)
        }) || email.is_some_and(|e| u.get("EMAIL").and_then(Value::as_str) == Some(e.trim()))
    })
}

fn letter_for<'a>(letters: &'a [DeadLetterRecord], worker: &str) -> Option<&'a DeadLetterRecord> {
    letters.iter().find(|l| l.letter.worker_id == worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_loaded_skipped_or_dead_lettered_and_nothing_loops() {
    let corpus = records();
    let messages = messages();
    assert!(
        corpus.len() + messages.len() >= 50,
        "{} kinds",
        corpus.len() + messages.len()
    );
    let d = Deployment::start(org(ORG, 10, 0), oomnitza_config()).await;
    let mut ids: Vec<String> = Vec::new();
    for (record, index) in corpus.iter().zip(corpus_indices()) {
        let id = generate::worker_id(index);
        d.sage.replace_worker(&id, record.raw.clone());
        ids.push(id);
    }
    let stack = Stack::start(d, 1, EXTRACTOR, 2, &loader_config()).await;
    let run_id = stack.trigger().await;

    // Garbage on the bus while the run loads.
    let js = stack.bus.jetstream().clone();
    let subject = names::workers_subject("sage-people");
    let mut sequences = Vec::new();
    for message in &messages {
        let mut publish = PublishMessage::build().payload(message.payload.clone());
        if let Some(id) = &message.msg_id {
            publish = publish.message_id(id.as_str());
        }
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .expect("publish")
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", message.name));
        sequences.push(ack.sequence);
    }

    let run = stack.settled(&run_id, Duration::from_secs(300)).await;
    stack.assert_drained().await;
    let consumer = names::loader_consumer("sage-people");
    let stream = js
        .get_stream(names::WORKERS_STREAM)
        .await
        .expect("work stream");
    let delivered = stream
        .consumer_info(&consumer)
        .await
        .expect("consumer")
        .delivered
        .stream_sequence;
    // Nothing comes back: two ack waits later the consumer has delivered nothing more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let info = stream.consumer_info(&consumer).await.expect("consumer");
    assert_eq!(
        info.delivered.stream_sequence, delivered,
        "redelivery: {info:?}"
    );
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));

    let users = stack.d.oomnitza.users();
    let letters = stack.d.dead_letters().await;
    let mut report = Vec::new();
    let mut skipped = 0;
    for (record, id) in corpus.iter().zip(&ids) {
        let served = record.raw.get("id").and_then(Value::as_str).unwrap_or(id);
        let mail = record.raw.get("emailAddress").and_then(Value::as_str);
        let user = find_user(&users, served, mail);
        let letter = letter_for(&letters, served).or_else(|| letter_for(&letters, id));
        let fate = match (user, letter) {
            (Some(_), None) => Loaded,
            (None, Some(l)) => {
                assert!(!l.letter.reason.trim().is_empty(), "{}: {l:?}", record.name);
                if l.letter.stage == "extractor" {
                    skipped += 1;
                }
                Lettered
            }
            (None, None) => {
                skipped += 1;
                Skipped
            }
            (Some(u), Some(l)) => panic!("{}: loaded {u:?} and dead-lettered {l:?}", record.name),
        };
        report.push(format!(
            "{:<50} {fate:?}{}",
            record.name,
            letter
                .map(|l| format!(": {}", l.letter.reason))
                .unwrap_or_default()
        ));
        assert!(
            record.fates.contains(&fate),
            "{}: {fate:?}, expected one of {:?}",
            record.name,
            record.fates
        );
        if let (Some(user), Some((field, value))) = (user, record.check) {
            assert_eq!(
                user.get(field).and_then(Value::as_str),
                value,
                "{}: {field}",
                record.name
            );
        }
    }
    for (message, sequence) in messages.iter().zip(&sequences) {
        let user = message
            .worker
            .as_deref()
            .and_then(|w| find_user(&users, w, message.email.as_deref()));
        let letter = letter_for(&letters, &format!("seq-{sequence}")).or_else(|| {
            message
                .worker
                .as_deref()
                .and_then(|w| letter_for(&letters, w))
        });
        let fate = match (user, letter) {
            (Some(_), None) => Loaded,
            (None, Some(l)) => {
                assert!(
                    !l.letter.reason.trim().is_empty(),
                    "{}: {l:?}",
                    message.name
                );
                Lettered
            }
            (None, None) => panic!("{}: lost (neither loaded nor dead-lettered)", message.name),
            (Some(u), Some(l)) => panic!("{}: loaded {u:?} and dead-lettered {l:?}", message.name),
        };
        report.push(format!(
            "bus: {:<45} {fate:?}{}",
            message.name,
            letter
                .map(|l| format!(": {}", l.letter.reason))
                .unwrap_or_default()
        ));
        assert!(
            message.fates.contains(&fate),
            "{}: {fate:?}, expected one of {:?}",
            message.name,
            message.fates
        );
    }
    eprintln!("[chaos] corpus:\n{}", report.join("\n"));
    assert_run_accounts(&stack, &run, skipped);
}

/// The run itself: completed, finalized once, every event accounted for.
fn assert_run_accounts(stack: &Stack, run: &RunRecord, skipped: u64) {
    assert_eq!(run.state, peoplesync_bus::RunState::Completed, "{run:?}");
    assert_eq!(run.skipped, skipped, "skipped by the extractor: {run:?}");
    assert_eq!(run.published + run.skipped, ORG, "{run:?}");
    let counts = run.counts.expect("counts");
    assert_eq!(counts.total(), run.expected(), "{counts:?}");
    assert_eq!(
        stack.d.oomnitza.stats().finalize_calls.get(&run.run_id),
        Some(&1)
    );
}
