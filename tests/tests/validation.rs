//! Business rules on the way to the sink: PostgreSQL → embedded log → PostgreSQL with
//! CEL rules in the configuration. A rejected event goes to the dead-letter file (with
//! the rule, the reason and the event) or is skipped, and the rest of its transaction
//! applies; a rule with `on_fail = "halt"` stops the pipeline before the event.

use anyhow::Context;
use std::time::Duration;
use tributary::commands::dead_letters;
use tributary::Config;
use tributary_tests::{wait_until, Postgres, Running};

const DDL: &str = "CREATE TABLE medicines (
    id int PRIMARY KEY,
    quantity int NOT NULL,
    price numeric(10,2) NOT NULL,
    manufacture_date date NOT NULL,
    expiry_date date NOT NULL
);
INSERT INTO medicines VALUES (1, 10, 4.50, '2026-01-01', '2028-01-01');";

const RULES: &str = r#"
[[rules]]
table = "public.medicines"
check = "quantity >= 0"

[[rules]]
table = "public.*"
name = "price_range"
check = "price > 0 && price < 100000"
on_fail = "skip"

[[rules]]
table = "*"
name = "expiry_after_manufacture"
check = "expiry_date > manufacture_date"
on_fail = "halt"
"#;

/// A private PostgreSQL with `medicines` (see [`DDL`]) in a source database and an empty
/// sink database, a state directory, and the configuration of a run between them over
/// `transport` (the `[transport]` table's lines) with `rules` (TOML) appended.
struct Scene {
    pg: Postgres,
    src: String,
    dst: String,
    state: tempfile::TempDir,
    config_text: String,
}

impl Scene {
    async fn new(transport: &str, rules: &str) -> anyhow::Result<Scene> {
        tributary_tests::init_tracing();
        let pg = Postgres::start().await?;
        let src = pg.create_database("src").await?;
        let dst = pg.create_database("dst").await?;
        pg.execute(&src, DDL).await?;
        let state = tempfile::tempdir()?;
        let config_text = format!(
            "state_dir = {:?}\n[transport]\n{transport}\n\n[sources.src]\nkind = \"postgres\"\nurl = {:?}\nheartbeat_secs = 1\n\n[sinks.dst]\nkind = \"postgres\"\nurl = {:?}\n{rules}",
            state.path(),
            pg.url(&src),
            pg.url(&dst)
        );
        Ok(Scene {
            pg,
            src,
            dst,
            state,
            config_text,
        })
    }
}

/// The sink's `medicines`, one `id:quantity:price` line per row in id order.
async fn sink_rows(pg: &Postgres, dst: &str) -> anyhow::Result<String> {
    let client = pg.client(dst).await?;
    let rows = client
        .query(
            "SELECT string_agg(id || ':' || quantity || ':' || price, ' ' ORDER BY id) FROM public.medicines",
            &[],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reject_to_dead_letters_skip_or_halt() -> anyhow::Result<()> {
    let Scene {
        pg,
        src,
        dst,
        state,
        config_text,
    } = Scene::new("kind = \"embedded\"", RULES).await?;
    // fail_fast: the halted apply loop stops the whole run (without it, the capture
    // would go on; the api tests show a failed loop alone).
    let config = Config::parse(
        &format!("{config_text}\n[retry]\nfail_fast = true\n"),
        |_| None,
    )
    .map_err(anyhow::Error::msg)?;
    let running = Running::start(config, false);

    sink_holds(&pg, &dst, &running, "1:10:4.50").await?;
    // One transaction: a valid row, one breaking the dead-letter rule, one breaking the
    // skip rule, and a valid update.
    pg.execute(
        &src,
        "BEGIN;
         INSERT INTO medicines VALUES (2, 5, 12.00, '2026-02-01', '2027-02-01');
         INSERT INTO medicines VALUES (3, -5, 3.00, '2026-02-01', '2027-02-01');
         INSERT INTO medicines VALUES (4, 7, 0.00, '2026-02-01', '2027-02-01');
         UPDATE medicines SET quantity = 9 WHERE id = 1;
         COMMIT;",
    )
    .await?;
    sink_holds(&pg, &dst, &running, "1:9:4.50 2:5:12.00").await?;
    let file = state.path().join("dead-letters/dst-src.dead-letters.jsonl");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        entries.len(),
        1,
        "only the dead-letter rule's event: {text}"
    );
    let entry = &entries[0];
    assert_eq!(entry["rule"], "quantity >= 0", "{entry}");
    let reason = entry["reason"].as_str().context("a reason")?;
    assert!(
        reason.contains("insert of public.medicines") && reason.contains("quantity = Int32(-5)"),
        "{reason}"
    );
    assert_eq!(entry["event"]["op"], "Insert", "{entry}");
    assert_eq!(entry["event"]["key"][0]["Int32"], 3, "{entry}");

    // Breaking the halt rule stops the pipeline before the event, naming the rule.
    pg.execute(
        &src,
        "UPDATE medicines SET expiry_date = '2025-01-01', quantity = 1 WHERE id = 2",
    )
    .await?;
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.task)
        .await
        .context("the pipeline halts")??;
    let err = outcome.expect_err("halted").to_string();
    assert!(
        err.contains("halted by a rule") && err.contains("expiry_after_manufacture"),
        "{err}"
    );
    assert_eq!(sink_rows(&pg, &dst).await?, "1:9:4.50 2:5:12.00");
    drop(running.stop);

    // With the rule fixed (expired stock is allowed in now), a restart reads the halted
    // event again and applies it once.
    let fixed = config_text.replace(
        "check = \"expiry_date > manufacture_date\"",
        "check = \"expiry_date > manufacture_date || quantity <= 1\"",
    );
    assert_ne!(fixed, config_text);
    let config = Config::parse(&fixed, |_| None).map_err(anyhow::Error::msg)?;
    let running = Running::start(config.clone(), false);
    sink_holds(&pg, &dst, &running, "1:9:4.50 2:1:12.00").await?;
    running.stop().await?;

    // Replaying the dead letters while the rule still rejects them applies nothing and
    // keeps them, with the reason.
    let report = dead_letters::replay_dead_letters(&config, "dst", "src").await?;
    assert_eq!(report.applied, 0);
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert!(
        report.kept[0].contains("quantity = Int32(-5)"),
        "{report:?}"
    );
    assert_eq!(sink_rows(&pg, &dst).await?, "1:9:4.50 2:1:12.00");
    // With the rule fixed (returns come in as negative quantities), the replay applies the
    // rejected insert, leaves the watermark where it was, and empties the queue.
    let watermark = || async {
        let row = pg
            .client(&dst)
            .await?
            .query_one(
                "SELECT position::text FROM tributary.watermarks WHERE source = 'src'",
                &[],
            )
            .await?;
        anyhow::Ok(row.get::<_, String>(0))
    };
    let before = watermark().await?;
    let fixed = fixed.replace("check = \"quantity >= 0\"", "check = \"quantity >= -10\"");
    let config = Config::parse(&fixed, |_| None).map_err(anyhow::Error::msg)?;
    let report = dead_letters::replay_dead_letters(&config, "dst", "src").await?;
    assert_eq!((report.applied, report.kept.len()), (1, 0), "{report:?}");
    assert_eq!(sink_rows(&pg, &dst).await?, "1:9:4.50 2:1:12.00 3:-5:3.00");
    assert_eq!(watermark().await?, before);
    assert_eq!(std::fs::read_to_string(&file)?, "");
    // A restart goes on from the watermark as before.
    let running = Running::start(config, false);
    pg.execute(&src, "UPDATE medicines SET quantity = 0 WHERE id = 2")
        .await?;
    sink_holds(&pg, &dst, &running, "1:9:4.50 2:0:12.00 3:-5:3.00").await?;
    running.stop().await?;
    Ok(())
}

/// A rule that does not parse, or names a table badly, is a configuration error naming it.
#[test]
fn bad_rules_are_configuration_errors() {
    let base = "[sources.src]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n";
    for (rules, want) in [
        (
            "[[rules]]\ntable = \"*\"\ncheck = \"quantity >=\"\n",
            "rules[0].check = \"quantity >=\" is not a valid CEL expression",
        ),
        (
            "[[rules]]\ntable = \"*\"\ncheck = \"true\"\n[[rules]]\ntable = \"medicines\"\ncheck = \"true\"\n",
            "rules[1].table = \"medicines\"",
        ),
        (
            "[[rules]]\ntable = \"*\"\ncheck = \"true\"\non_fail = \"explode\"\n",
            "rules[0].on_fail",
        ),
    ] {
        let err = Config::parse(&format!("{base}{rules}"), |_| None).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
}

/// Over Kafka, a rejected event is also published to the source's dead-letter topic
/// (`<prefix>.dead_letters`, JSON keyed by the sink), durably before the loop moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_reach_the_kafka_dead_letter_topic() -> anyhow::Result<()> {
    use tributary_transport::kafka::KafkaConsumer;
    use tributary_transport::kafka::KafkaSettings;
    use tributary_transport::Consumer;
    let kafka = tributary_tests::Kafka::start().await?;
    let Scene {
        pg,
        src,
        dst,
        state: _state,
        config_text,
    } = Scene::new(
        &format!("kind = \"kafka\"\nbrokers = \"{}\"", kafka.bootstrap()),
        "\n[[rules]]\ntable = \"*\"\ncheck = \"quantity >= 0\"\n",
    )
    .await?;
    let config = Config::parse(&config_text, |_| None).map_err(anyhow::Error::msg)?;
    let running = Running::start(config, false);
    sink_holds(&pg, &dst, &running, "1:10:4.50").await?;
    pg.execute(
        &src,
        "INSERT INTO medicines VALUES (7, -1, 2.00, '2026-02-01', '2027-02-01'), (8, 1, 2.00, '2026-02-01', '2027-02-01')",
    )
    .await?;
    sink_holds(&pg, &dst, &running, "1:10:4.50 8:1:2.00").await?;
    let consumer =
        KafkaConsumer::connect(&KafkaSettings::new(kafka.bootstrap()), "inspect").await?;
    let mut reader = consumer.reader("src.dead_letters").await?;
    let entry = reader
        .next(Some(Duration::from_secs(30)))
        .await?
        .context("an entry in src.dead_letters")?;
    assert_eq!(entry.key.as_deref(), Some(&b"dst"[..]), "keyed by the sink");
    let json: serde_json::Value = serde_json::from_slice(&entry.value)?;
    assert_eq!(json["rule"], "quantity >= 0", "{json}");
    assert_eq!(json["event"]["key"][0]["Int32"], 7, "{json}");
    assert_eq!(json["topic"], "src.public.medicines", "{json}");
    running.stop().await?;
    Ok(())
}

/// Waits until the sink's `medicines` reads `want` (see [`sink_rows`]), failing early
/// when the run stopped.
async fn sink_holds(pg: &Postgres, dst: &str, running: &Running, want: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("the sink holds {want}"),
        Duration::from_secs(60),
        || async {
            anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
            Ok(sink_rows(pg, dst).await.unwrap_or_default() == want)
        },
    )
    .await
}
