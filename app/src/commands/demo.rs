//! `tributary demo`: a pharmacy head office streaming into a replica, watched live.
//!
//! Loads a small pharmacy dataset (suppliers, medicines, inventory of ten stores, users,
//! sales, orders) into the source database, starts capture and apply on the embedded
//! transport in this process, runs a sales/price/order workload while printing progress,
//! then waits until every replica table equals its source table (row count and a digest
//! of the full contents) and says where everything is. `scripts/demo.sh` starts two
//! private PostgreSQL servers and runs this.

use crate::config::Config;
use crate::runtime::{self, Roles};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_schemas::redact_url;
use tributary_sinks::admin::Session;
use tributary_sinks::SinkConfig;

/// Arguments of `tributary demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Source (head office) database URL; the demo replaces its pharmacy tables.
    #[arg(long)]
    pub source_url: String,
    /// Replica database URL.
    #[arg(long)]
    pub sink_url: String,
    /// Seconds of write load.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Directory for the demo's state and embedded log.
    #[arg(long, default_value = ".tributary-demo")]
    pub dir: PathBuf,
}

/// The demo's tables, in load order.
pub const TABLES: &[&str] = &[
    "suppliers",
    "medicines",
    "inventory",
    "users",
    "sales",
    "orders",
];

const SCHEMA: &str = r#"
DROP TABLE IF EXISTS suppliers, medicines, inventory, users, sales, orders CASCADE;
DROP TYPE IF EXISTS medicine_form;
CREATE TYPE medicine_form AS ENUM ('tablet', 'capsule', 'syrup', 'injection');
CREATE TABLE suppliers (id serial PRIMARY KEY, name text NOT NULL, country char(2), contact jsonb, created_at timestamptz DEFAULT now());
CREATE TABLE medicines (id serial PRIMARY KEY, name text NOT NULL, supplier_id int, form medicine_form, price numeric(10,2),
  tags text[], manufactured date, expires date, leaflet text);
CREATE TABLE inventory (store_id int, medicine_id int, quantity int NOT NULL, updated_at timestamptz, PRIMARY KEY (store_id, medicine_id));
CREATE TABLE users (id uuid PRIMARY KEY, name text, email varchar(120), role text, active bool, last_login timestamp);
CREATE TABLE sales (id bigserial PRIMARY KEY, store_id int, medicine_id int, quantity int, amount numeric(12,2), sold_at timestamptz);
CREATE TABLE orders (id bigserial PRIMARY KEY, supplier_id int, status text, lines jsonb, ordered_at timestamptz, lead_time interval, checksum bytea);
INSERT INTO suppliers (name, country, contact)
  SELECT 'Supplier ' || g, (ARRAY['DE','FR','IN','US'])[1 + g % 4], jsonb_build_object('phone', '+49 30 ' || g, 'email', 's' || g || '@example.com')
  FROM generate_series(1, 50) g;
INSERT INTO medicines (name, supplier_id, form, price, tags, manufactured, expires, leaflet)
  SELECT 'Medicine ' || g, 1 + g % 50, (ARRAY['tablet','capsule','syrup','injection']::medicine_form[])[1 + g % 4],
    round((1 + random() * 200)::numeric, 2), ARRAY['rx', 'group-' || (g % 7)], date '2024-01-01' + (g % 300),
    date '2027-01-01' + (g % 300), CASE WHEN g % 10 = 0 THEN repeat('Take with water. ', 2000) ELSE 'Take with water.' END
  FROM generate_series(1, 2000) g;
INSERT INTO inventory SELECT s, m, 100 + (s * m) % 50, now() FROM generate_series(1, 10) s, generate_series(1, 2000) m;
INSERT INTO users SELECT gen_random_uuid(), 'User ' || g, 'user' || g || '@pharmacy.example', (ARRAY['cashier','pharmacist','manager'])[1 + g % 3], g % 9 <> 0, now() - g * interval '1 hour'
  FROM generate_series(1, 200) g;
INSERT INTO sales (store_id, medicine_id, quantity, amount, sold_at)
  SELECT 1 + g % 10, 1 + g % 2000, 1 + g % 3, round((5 + random() * 50)::numeric, 2), now() - g * interval '1 minute' FROM generate_series(1, 5000) g;
INSERT INTO orders (supplier_id, status, lines, ordered_at, lead_time, checksum)
  SELECT 1 + g % 50, 'delivered', jsonb_build_array(jsonb_build_object('medicine', g, 'qty', 10)), now() - g * interval '1 day', (g % 14) * interval '1 day', sha256(g::text::bytea)
  FROM generate_series(1, 500) g;
"#;

/// One step of the workload: a sale, a price change, an order, or a cancellation.
const WORKLOAD: &[&str] = &[
    "WITH s AS (SELECT 1 + (random() * 9)::int AS store, 1 + (random() * 1999)::int AS med, 1 + (random() * 2)::int AS qty) \
     , ins AS (INSERT INTO sales (store_id, medicine_id, quantity, amount, sold_at) SELECT store, med, qty, qty * 9.99, now() FROM s) \
     UPDATE inventory i SET quantity = i.quantity - s.qty, updated_at = now() FROM s WHERE i.store_id = s.store AND i.medicine_id = s.med",
    "UPDATE medicines SET price = round((price * (0.95 + random() * 0.1))::numeric, 2) WHERE id = 1 + (random() * 1999)::int",
    "INSERT INTO orders (supplier_id, status, lines, ordered_at, lead_time) VALUES (1 + (random() * 49)::int, 'open', '[{\"medicine\": 7, \"qty\": 40}]', now(), interval '3 days')",
    "UPDATE orders SET status = 'delivered' WHERE id = (SELECT max(id) FROM orders WHERE status = 'open')",
    "DELETE FROM sales WHERE id = (SELECT min(id) FROM sales)",
];

/// A session on the database at `url` (`what` names it in errors).
async fn connect(url: &str, what: &str) -> anyhow::Result<Session> {
    SinkConfig::from_url(url, None, 1, what)?
        .session()
        .await
        .with_context(|| format!("connecting to {}", redact_url(url)))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut source = connect(&args.source_url, "--source-url").await?;
    let mut sink = connect(&args.sink_url, "--sink-url").await?;
    println!("loading the pharmacy dataset into the head office database …");
    source
        .execute(SCHEMA)
        .await
        .context("loading the dataset")?;
    sink.execute(
        "DROP SCHEMA IF EXISTS tributary CASCADE; DROP TABLE IF EXISTS suppliers, medicines, inventory, users, sales, orders CASCADE",
    )
    .await
    .context("clearing the replica")?;
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let config_text = format!(
        "state_dir = {dir:?}\n\n[transport]\nkind = \"embedded\"\n\n[sources.head_office]\nkind = \"postgres\"\nurl = {src:?}\n\n[sinks.replica]\nkind = \"postgres\"\nurl = {dst:?}\n",
        dir = args.dir.join("state"),
        src = args.source_url,
        dst = args.sink_url
    );
    let config_path = args.dir.join("tributary.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::parse(&config_text, |_| None).map_err(anyhow::Error::msg)?;
    let stats = runtime::stats_for(&config);
    let apply = stats
        .values()
        .next()
        .cloned()
        .context("the demo has one apply loop")?;
    let (stop, shutdown) = watch::channel(false);
    let mut pipeline = tokio::spawn(runtime::run(
        config,
        Roles {
            capture: true,
            pipeline: true,
            registry: false,
            api: false,
        },
        stats,
        shutdown,
    ));

    println!(
        "streaming: initial snapshot, then {}s of sales, price changes and orders",
        args.seconds
    );
    let started = Instant::now();
    let mut writes = 0u64;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    let mut step = 0usize;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        if pipeline.is_finished() {
            break;
        }
        source
            .execute(WORKLOAD[step % WORKLOAD.len()])
            .await
            .context("writing to the head office")?;
        step += 1;
        writes += 1;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let lag_ms = (chrono_now_micros()
                - apply.last_commit_ts_micros.load(Ordering::Relaxed) as i64)
                / 1000;
            println!(
                "  {:>3}s  head office transactions {:>6}  applied to replica: {:>7} events in {:>6} transactions  lag {}",
                started.elapsed().as_secs(),
                writes,
                apply.events.load(Ordering::Relaxed),
                apply.transactions.load(Ordering::Relaxed),
                if apply.transactions.load(Ordering::Relaxed) == 0 { "-".to_string() } else { format!("{lag_ms} ms") }
            );
        }
    }
    println!("load stopped; waiting for the replica to match the head office …");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut matched = false;
    while Instant::now() < deadline && !pipeline.is_finished() {
        let mut all = true;
        for t in TABLES {
            let want = source.table_digest(t).await?;
            let have = sink.table_digest(t).await.unwrap_or_default();
            all &= want == have;
        }
        if all {
            matched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    let outcome = (&mut pipeline).await.context("pipeline task")?;
    if let Err(e) = outcome {
        bail!("the pipeline failed: {e}");
    }
    if !matched {
        bail!("the replica did not match the head office within 120 s");
    }
    println!("\nreplica equals head office:");
    for t in TABLES {
        let (rows, digest) = sink.table_digest(t).await?;
        println!("  {t:<10} {rows:>6} rows  md5 {digest}");
    }
    println!(
        "\napplied {} events in {} transactions.\nreplica:       {}\nconfiguration: {}\nstate and embedded log: {}",
        apply.events.load(Ordering::Relaxed),
        apply.transactions.load(Ordering::Relaxed),
        redact_url(&args.sink_url),
        config_path.display(),
        args.dir.join("state").display()
    );
    Ok(())
}

fn chrono_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
