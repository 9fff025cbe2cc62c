//! One suite, run against both backends.
use autodebit_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, Migrations, NewEvent, StoreOptions, Value, testing,
};
use std::collections::HashMap;
use std::time::Duration;

struct Db {
    store: EventStore,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(StoreOptions::new(testing::sqlite_url(dir.path()))).await.unwrap();
    Db { store, _dir: Some(dir) }
}

async fn postgres() -> Db {
    let store = EventStore::open(StoreOptions::new(testing::fresh_postgres_url().await)).await.unwrap();
    Db { store, _dir: None }
}

/// Reads the log until `n` events are visible. On PostgreSQL an event becomes visible to
/// readers once every older transaction in the cluster has ended, which can take a moment
/// while other tests hold transactions open.
async fn read_settled(s: &EventStore, after: Checkpoint, n: usize) -> Vec<autodebit_eventstore::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = s.read_all(after, 1000).await.unwrap();
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ev(tag: &str) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Tested".into(),
        payload: tag.as_bytes().to_vec(),
        metadata: vec![1, 2, 3],
        recorded_at_ms: 42,
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::sqlite().await).await } )* }
        mod on_postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::postgres().await).await } )* }
    };
}

both!(
    appends_and_reads_streams,
    expected_versions_are_enforced,
    global_log_reads_from_checkpoints,
    checkpoint_commits_with_effects,
    events_are_append_only,
    group_commit_answers_each_caller,
    concurrent_writers_and_a_tailing_reader,
    migrations_run_once,
    reads_by_type_pass_over_other_types,
);

/// `read_types` returns only the asked-for types, in log order, and says how far it scanned:
/// to the end of its window, to its limit, or to the end of the log.
async fn reads_by_type_pass_over_other_types(db: Db) {
    let s = &db.store;
    let typed = |t: &str, tag: usize| NewEvent { event_type: t.into(), ..ev(&tag.to_string()) };
    for i in 0..30 {
        let t = if i % 3 == 0 { "Wanted" } else { "Other" };
        s.append(&format!("t-{i}"), ExpectedVersion::NoStream, vec![typed(t, i)]).await.unwrap();
    }
    let all = read_settled(s, Checkpoint::default(), 30).await;
    assert_eq!(all.len(), 30);
    let tag = |e: &autodebit_eventstore::RecordedEvent| String::from_utf8(e.payload.clone()).unwrap();

    // A window of 10 events holds 4 wanted ones (0, 3, 6, 9) and ends at the 10th.
    let scan = s.read_types(Checkpoint::default(), 10, 100, &["Wanted"]).await.unwrap();
    assert_eq!(scan.events.iter().map(tag).collect::<Vec<_>>(), ["0", "3", "6", "9"]);
    assert!(scan.events.iter().all(|e| e.event_type == "Wanted"));
    assert_eq!(scan.through, all[9].checkpoint());

    // The limit ends the scan at the last event returned.
    let scan = s.read_types(scan.through, 100, 2, &["Wanted"]).await.unwrap();
    assert_eq!(scan.events.iter().map(tag).collect::<Vec<_>>(), ["12", "15"]);
    assert_eq!(scan.through, all[15].checkpoint());

    // The end of the log ends it, even past events of other types only.
    let scan = s.read_types(scan.through, 100, 100, &["Wanted"]).await.unwrap();
    assert_eq!(scan.events.iter().map(tag).collect::<Vec<_>>(), ["18", "21", "24", "27"]);
    assert_eq!(scan.through, all[29].checkpoint());
    let scan = s.read_types(all[27].checkpoint(), 100, 100, &["Wanted"]).await.unwrap();
    assert!(scan.events.is_empty());
    assert_eq!(scan.through, all[29].checkpoint(), "the two other events after the last wanted are passed");

    // Nothing after the end: the scan stays where it was.
    let scan = s.read_types(all[29].checkpoint(), 100, 100, &["Wanted"]).await.unwrap();
    assert!(scan.events.is_empty());
    assert_eq!(scan.through, all[29].checkpoint());

    // Several types, and no types (every event).
    let scan = s.read_types(Checkpoint::default(), 6, 100, &["Other", "Wanted"]).await.unwrap();
    assert_eq!(scan.events.len(), 6);
    let scan = s.read_types(Checkpoint::default(), 6, 5, &[]).await.unwrap();
    assert_eq!(scan.events.len(), 5);
    assert_eq!(scan.through, all[4].checkpoint());
}

async fn appends_and_reads_streams(db: Db) {
    let s = &db.store;
    let out = s.append("a-1", ExpectedVersion::NoStream, vec![ev("x"), ev("y")]).await.unwrap();
    assert_eq!((out.first_version, out.last_version), (1, 2));
    let out = s.append("a-1", ExpectedVersion::Exact(2), vec![ev("z")]).await.unwrap();
    assert_eq!((out.first_version, out.last_version), (3, 3));
    let events = s.read_stream("a-1", 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]
    );
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(events[0].metadata, vec![1, 2, 3]);
    assert_eq!(s.read_stream("a-1", 2).await.unwrap().len(), 1);
    assert!(s.read_stream("nothing", 0).await.unwrap().is_empty());
    assert!(s.append("a-1", ExpectedVersion::Any, vec![]).await.is_err(), "an empty append is refused");
}

async fn expected_versions_are_enforced(db: Db) {
    let s = &db.store;
    s.append("b-1", ExpectedVersion::NoStream, vec![ev("1")]).await.unwrap();
    let e = s.append("b-1", ExpectedVersion::NoStream, vec![ev("2")]).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let e = s.append("b-1", ExpectedVersion::Exact(5), vec![ev("2")]).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let e = s.append("b-2", ExpectedVersion::Exact(1), vec![ev("2")]).await.unwrap_err();
    assert!(e.is_conflict(), "a stream that does not exist is at version 0: {e}");
    s.append("b-1", ExpectedVersion::Any, vec![ev("2")]).await.unwrap();
    assert_eq!(s.read_stream("b-1", 0).await.unwrap().len(), 2);

    // A multi-stream append is all or nothing.
    let mut tx = s.begin().await.unwrap();
    let res = tx
        .append_many(&[
            autodebit_eventstore::StreamAppend {
                stream: "b-3".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("ok")],
            },
            autodebit_eventstore::StreamAppend {
                stream: "b-1".into(),
                expected: ExpectedVersion::Exact(1),
                events: vec![ev("stale")],
            },
        ])
        .await;
    assert!(res.unwrap_err().is_conflict());
    drop(tx);
    assert!(s.read_stream("b-3", 0).await.unwrap().is_empty(), "nothing is half-written");

    // append_each writes what holds and answers each append on its own.
    let mut tx = s.begin().await.unwrap();
    let res = tx
        .append_each(&[
            autodebit_eventstore::StreamAppend {
                stream: "b-4".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("ok")],
            },
            autodebit_eventstore::StreamAppend {
                stream: "b-1".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("no")],
            },
        ])
        .await
        .unwrap();
    assert_eq!(res[0].as_ref().unwrap().last_version, 1);
    assert!(res[1].as_ref().unwrap_err().is_conflict());
    tx.commit().await.unwrap();
    assert_eq!(s.read_stream("b-4", 0).await.unwrap().len(), 1);
    assert_eq!(s.read_stream("b-1", 0).await.unwrap().len(), 2);
}

async fn global_log_reads_from_checkpoints(db: Db) {
    let s = &db.store;
    for i in 0..10 {
        s.append(&format!("c-{}", i % 3), ExpectedVersion::Any, vec![ev(&i.to_string())]).await.unwrap();
    }
    let all = read_settled(s, Checkpoint::default(), 10).await;
    assert_eq!(all.len(), 10);
    let payloads: Vec<String> = all.iter().map(|e| String::from_utf8(e.payload.clone()).unwrap()).collect();
    assert_eq!(payloads, (0..10).map(|i| i.to_string()).collect::<Vec<_>>(), "sequential appends keep their order");
    let first = s.read_all(Checkpoint::default(), 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = s.read_all(first.last().unwrap().checkpoint(), 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(rest[0].payload, b"4".to_vec());
    assert_eq!(s.count().await.unwrap(), 10);
}

async fn checkpoint_commits_with_effects(db: Db) {
    let s = &db.store;
    s.migrate(&Migrations::from_sql(
        "test-projection",
        9000..9100,
        &[(9000, "CREATE TABLE seen (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")],
    ))
    .await
    .unwrap();
    s.append("d-1", ExpectedVersion::Any, vec![ev("1"), ev("2")]).await.unwrap();
    let events = read_settled(s, Checkpoint::default(), 2).await;
    let cp = events.last().expect("two events are readable").checkpoint();

    // Rolled back: neither the effect nor the checkpoint.
    let mut tx = s.begin().await.unwrap();
    tx.execute("INSERT INTO seen (id, n) VALUES ($1, $2)", &["a".into(), Value::Int(1)]).await.unwrap();
    tx.save_checkpoint("proj", Checkpoint::default(), cp).await.unwrap();
    drop(tx);
    assert_eq!(s.load_checkpoint("proj").await.unwrap(), Checkpoint::default());
    assert!(s.query("SELECT id FROM seen", &[]).await.unwrap().is_empty());

    // Committed: both.
    let mut tx = s.begin().await.unwrap();
    tx.execute("INSERT INTO seen (id, n) VALUES ($1, $2)", &["a".into(), Value::Int(1)]).await.unwrap();
    tx.save_checkpoint("proj", Checkpoint::default(), cp).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.load_checkpoint("proj").await.unwrap(), cp);
    let rows = s.query("SELECT id, n FROM seen WHERE id = $1", &["a".into()]).await.unwrap();
    assert_eq!(rows[0].text(0), Some("a"));
    assert_eq!(rows[0].i64(1), Some(1));
    assert!(s.read_all(cp, 10).await.unwrap().is_empty());

    // A second runner that still believes the old checkpoint cannot save over the first.
    let mut tx = s.begin().await.unwrap();
    tx.execute("INSERT INTO seen (id, n) VALUES ($1, $2)", &["b".into(), Value::Int(2)]).await.unwrap();
    let err = tx.save_checkpoint("proj", Checkpoint::default(), cp).await.unwrap_err();
    assert!(matches!(err, autodebit_eventstore::StoreError::CheckpointMoved(_)), "{err}");
    drop(tx);
    assert_eq!(s.query("SELECT id FROM seen", &[]).await.unwrap().len(), 1, "its effects were dropped");
}

async fn events_are_append_only(db: Db) {
    let s = &db.store;
    s.append("e-1", ExpectedVersion::Any, vec![ev("1")]).await.unwrap();
    let mut tx = s.begin().await.unwrap();
    assert!(tx.execute("UPDATE events SET event_type = 'x'", &[]).await.is_err());
    drop(tx);
    let mut tx = s.begin().await.unwrap();
    assert!(tx.execute("DELETE FROM events", &[]).await.is_err());
    drop(tx);
    assert_eq!(s.read_stream("e-1", 0).await.unwrap()[0].event_type, "Tested");
}

async fn group_commit_answers_each_caller(db: Db) {
    // 32 callers race for the same stream with expected versions: every version is taken
    // exactly once and every loser hears of its conflict.
    let mut tasks = Vec::new();
    for w in 0..32 {
        let s = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for _ in 0..10 {
                loop {
                    let at = s.read_stream("hot", 0).await.unwrap().len() as u64;
                    let exp = if at == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(at) };
                    match s.append("hot", exp, vec![ev(&w.to_string())]).await {
                        Ok(_) => {
                            won += 1;
                            break;
                        }
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                // And a stream of its own, never contended.
                s.append(&format!("own-{w}"), ExpectedVersion::Any, vec![ev("own")]).await.unwrap();
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 320);
    let hot = db.store.read_stream("hot", 0).await.unwrap();
    assert_eq!(hot.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=320).collect::<Vec<_>>());
}

/// Writers hold their transactions open for random times, so positions commit out of order;
/// a reader tailing from checkpoints must still see every event once, in stream order.
async fn concurrent_writers_and_a_tailing_reader(db: Db) {
    const WRITERS: usize = 12;
    const PER_WRITER: usize = 60;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = db.store.clone();
        writers.push(tokio::spawn(async move {
            let mut seed = (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for i in 0..PER_WRITER {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let stream = format!("w{}-{}", w, i % 3);
                let mut tx = s.begin().await.unwrap();
                tx.append(&stream, ExpectedVersion::Any, vec![ev(&format!("{w}:{i}"))]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(seed % 7)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    let reader = {
        let s = db.store.clone();
        tokio::spawn(async move {
            let mut cp = Checkpoint::default();
            let mut seen: Vec<(String, u64, String)> = Vec::new();
            let mut wake = s.watch_commits();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < WRITERS * PER_WRITER {
                assert!(tokio::time::Instant::now() < deadline, "reader saw only {} events", seen.len());
                let batch = s.read_all(cp, 37).await.unwrap();
                if batch.is_empty() {
                    let _ = tokio::time::timeout(s.poll_interval(), wake.changed()).await;
                    continue;
                }
                for e in &batch {
                    assert!(e.checkpoint() > cp, "the log moved backwards");
                    cp = e.checkpoint();
                    seen.push((e.stream.clone(), e.version, String::from_utf8(e.payload.clone()).unwrap()));
                }
            }
            // Nothing more arrives later.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(s.read_all(cp, 10).await.unwrap().is_empty(), "an event arrived behind the reader");
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let mut unique = std::collections::HashSet::new();
    for (_, _, p) in &seen {
        assert!(unique.insert(p.clone()), "event {p} seen twice");
    }
    assert_eq!(unique.len(), WRITERS * PER_WRITER);
    let mut last: HashMap<String, u64> = HashMap::new();
    for (stream, version, _) in &seen {
        let prev = last.insert(stream.clone(), *version).unwrap_or(0);
        assert_eq!(*version, prev + 1, "stream {stream} out of order");
    }
}

async fn migrations_run_once(db: Db) {
    let first = (9100, "CREATE TABLE once (id BIGINT)");
    let m = Migrations::from_sql("once", 9100..9200, &[first]);
    db.store.migrate(&m).await.unwrap();
    db.store.migrate(&m).await.unwrap();
    let more = Migrations::from_sql("once", 9100..9200, &[first, (9101, "ALTER TABLE once ADD COLUMN note TEXT")]);
    db.store.migrate(&more).await.unwrap();
    // A migration outside its component's versions is refused before anything runs.
    let stray = Migrations::from_sql("once", 9100..9200, &[(1, "CREATE TABLE stray (id BIGINT)")]);
    let err = db.store.migrate(&stray).await.unwrap_err().to_string();
    assert!(err.contains("outside its versions"), "{err}");
    let mut tx = db.store.begin().await.unwrap();
    tx.execute("INSERT INTO once (id, note) VALUES ($1, $2)", &[Value::Int(1), "n".into()]).await.unwrap();
    tx.commit().await.unwrap();
}

/// Transaction ids sort as numbers, not as text: 10^k comes after 10^k - 1. (A reader that
/// sorted them as text would skip and repeat events whenever the cluster's ids gained a digit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_transaction_ids_sort_as_numbers() {
    let db = postgres().await;
    let s = &db.store;
    // Three ids below the cluster's current one (so readers may see them), the first two either
    // side of a power of ten: 10^k - 1 and 10^k.
    let current: u64 =
        s.query("SELECT pg_current_xact_id()::text", &[]).await.unwrap()[0].text(0).unwrap().parse().unwrap();
    assert!(current > 100, "a cluster this young cannot host the test (current xid {current})");
    let mut power = 10u64.pow(current.ilog10());
    if power + 2 >= current - 10 {
        power /= 10;
    }
    let (low, mid, high) = (power - 1, power, current - 10);
    let mut tx = s.begin().await.unwrap();
    for (xid, v) in [(mid, 2), (low, 1), (high, 3)] {
        tx.execute(
            &format!(
                "INSERT INTO events (transaction_id, stream, version, event_type, event_id, payload, metadata, recorded_at)
                 VALUES ('{xid}'::xid8, 'digits', {v}, 'Tested', gen_random_uuid(), '\\x00'::bytea, '\\x00'::bytea, 0)"
            ),
            &[],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let all = read_settled(s, Checkpoint::default(), 3).await;
    let ids: Vec<u64> = all.iter().map(|e| e.transaction_id).collect();
    assert_eq!(ids, vec![low, mid, high]);
    let after = s.read_all(all[0].checkpoint(), 10).await.unwrap();
    assert_eq!(after.iter().map(|e| e.transaction_id).collect::<Vec<_>>(), vec![mid, high]);
}

/// On SQLite's one writer, a background transaction lets foreground ones that are waiting go
/// first, even those that came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_background_transactions_stand_aside_for_foreground_ones() {
    let db = sqlite().await;
    let s = db.store.clone();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = s.begin().await.unwrap();
    let run = |name: &'static str, background: bool| {
        let (s, order) = (s.clone(), order.clone());
        tokio::spawn(async move {
            let tx = if background { s.begin_background().await } else { s.begin().await }.unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.commit().await.unwrap();
        })
    };
    let first = run("foreground 1", false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let background = run("background", true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = run("foreground 2", false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.commit().await.unwrap();
    for t in [first, background, second] {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["foreground 1", "foreground 2", "background"]);
}

/// A test database left behind by a run long gone is dropped when a later test creates its
/// own; a recent one (another run's, perhaps still going) is kept.
#[tokio::test]
async fn stale_test_databases_are_dropped() {
    use sqlx::Connection;
    let admin = testing::postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL for the test databases");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let old = format!("autodebit_t_{}_stale0000000", now_ms - 7 * 3_600_000);
    let recent = format!("autodebit_t_{}_recent000000", now_ms - 3_600_000);
    for name in [&old, &recent] {
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    }
    let _fresh = testing::fresh_postgres_url().await;
    let exists = |name: String| {
        let admin = admin.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap()
                == 1
        }
    };
    assert!(!exists(old).await, "a test database seven hours old is dropped");
    assert!(exists(recent.clone()).await, "one an hour old is kept");
    sqlx::query(&format!("DROP DATABASE {recent}")).execute(&mut conn).await.unwrap();
}
