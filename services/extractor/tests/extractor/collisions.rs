//! Workers that would land on one Oomnitza user (the same e-mail, in any case) are held back
//! with a dead letter naming the other worker, kept in the seen list, and remembered so the next
//! run sends neither.

use peoplesync_bus::dlq;
use peoplesync_sims::generate;
use serde_json::json;

use crate::harness::*;

fn email_of(s: &Setup, index: u64) -> String {
    s.sim
        .worker(&generate::worker_id(index))
        .and_then(|w| w["emailAddress"].as_str().map(str::to_owned))
        .expect("a generated worker with an e-mail")
}

#[tokio::test]
async fn workers_sharing_an_email_are_held_and_the_next_run_sends_neither() {
    let s = setup(org(200, 50, 50)).await;
    // Two on the same page (3 and 7), two on different pages (10 and 120, another case).
    for (from, to) in [(3u64, 7u64), (10, 120)] {
        let email = email_of(&s, from);
        let email = if to == 120 {
            email.to_uppercase()
        } else {
            email
        };
        s.sim
            .patch_worker(&generate::worker_id(to), json!({"emailAddress": email}));
    }
    let first = s.full_run().await;
    let events = drain_workers(&s.bus, ID).await;
    let sent: Vec<String> = events
        .iter()
        .filter_map(|e| e.worker.as_ref().map(|w| w.id.clone()))
        .collect();
    let id = generate::worker_id;
    assert!(
        !sent.contains(&id(3)) && !sent.contains(&id(7)),
        "same page: neither sent"
    );
    assert!(
        sent.contains(&id(10)),
        "listed first on an earlier page: already sent"
    );
    assert!(!sent.contains(&id(120)), "the later one is held");
    assert_eq!((first.published, first.skipped), (197, 3));

    let held = letters(&s.bus).await;
    assert_eq!(held.len(), 3, "{:?}", held.keys());
    let reason = |w: u64| held[&id(w)].letter.reason.clone();
    assert!(
        reason(3).contains(&id(7)) && reason(3).contains("EMAIL"),
        "{}",
        reason(3)
    );
    assert!(reason(7).contains(&id(3)), "{}", reason(7));
    assert!(
        reason(120).contains(&id(10)) && reason(120).contains("already sent"),
        "{}",
        reason(120)
    );
    assert!(
        held.values()
            .all(|r| r.letter.stage == dlq::STAGE_EXTRACTOR)
    );

    // The next full run holds all four; nobody is taken for a removal.
    let second = s.full_run().await;
    assert_eq!(
        (second.published, second.skipped, second.removed),
        (196, 4, 0)
    );
    let sent: Vec<String> = drain_workers(&s.bus, ID)
        .await
        .iter()
        .filter_map(|e| e.worker.as_ref().map(|w| w.id.clone()))
        .collect();
    for w in [3, 7, 10, 120] {
        assert!(!sent.contains(&id(w)), "worker {w} held in the second run");
    }
    assert!(
        letters(&s.bus).await[&id(10)]
            .letter
            .reason
            .contains(&id(120))
    );

    // Fixed in Sage People: the next run finds every key unique, and the one after holds
    // nobody.
    s.sim
        .patch_worker(&id(7), json!({"emailAddress": "seven@example.test"}));
    s.sim
        .patch_worker(&id(120), json!({"emailAddress": "one-twenty@example.test"}));
    let third = s.full_run().await;
    // Workers 3 and 10 keep the keys that were shared last run: held once more. 7 and 120
    // have new ones and are sent.
    assert_eq!((third.published, third.skipped), (198, 2));
    drain_workers(&s.bus, ID).await;
    let fourth = s.full_run().await;
    assert_eq!((fourth.published, fourth.skipped), (200, 0));
}
