//! Committed offsets are kept per topic and a new consumer of the group resumes from them,
//! for both transports.

use std::time::Duration;
use tributary_tests::Kafka;
use tributary_transport::kafka::KafkaConsumer;
use tributary_transport::kafka::{KafkaProducer, KafkaSettings};
use tributary_transport::log::EmbeddedConsumer;
use tributary_transport::log::EmbeddedProducer;
use tributary_transport::Consumer;
use tributary_transport::{Producer, Record};

const TOPICS: [&str; 3] = ["t.a", "t.b", "t.c"];

async fn fill(producer: &dyn Producer) -> anyhow::Result<()> {
    let topics: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    producer.ensure_topics(&topics).await?;
    let mut deliveries = Vec::new();
    for i in 0..30u32 {
        for t in TOPICS {
            deliveries.push(
                producer
                    .send(Record {
                        topic: t.into(),
                        key: None,
                        value: format!("{t}-{i}").into_bytes(),
                    })
                    .await?,
            );
        }
    }
    for d in deliveries {
        d.await?;
    }
    Ok(())
}

/// Reads 3, 7 and 11 records from the three topics, commits, then checks a new consumer
/// continues each topic where the first stopped.
async fn resumes_per_topic(
    open: impl Fn() -> futures::future::BoxFuture<'static, anyhow::Result<Box<dyn Consumer>>>,
) -> anyhow::Result<()> {
    let first = open().await?;
    let mut commits = Vec::new();
    for (t, n) in TOPICS.iter().zip([3usize, 7, 11]) {
        let mut reader = first.reader(t).await?;
        let mut next = 0;
        for _ in 0..n {
            next = reader
                .next(Some(Duration::from_secs(20)))
                .await?
                .expect("record")
                .next_offset;
        }
        commits.push((t.to_string(), next));
    }
    first.commit(&commits).await?;
    drop(first);
    let second = open().await?;
    for (t, n) in TOPICS.iter().zip([3usize, 7, 11]) {
        let mut reader = second.reader(t).await?;
        let r = reader
            .next(Some(Duration::from_secs(20)))
            .await?
            .expect("record");
        assert_eq!(
            String::from_utf8(r.value)?,
            format!("{t}-{n}"),
            "topic {t} resumes after its own committed offset"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_offsets_are_per_topic() -> anyhow::Result<()> {
    let kafka = Kafka::start().await?;
    let settings = KafkaSettings::new(kafka.bootstrap());
    fill(&KafkaProducer::connect(&settings).await?).await?;
    resumes_per_topic(|| {
        let settings = settings.clone();
        Box::pin(async move {
            Ok(Box::new(KafkaConsumer::connect(&settings, "g").await?) as Box<dyn Consumer>)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_offsets_are_per_topic() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fill(&EmbeddedProducer::open(dir.path())?).await?;
    let path = dir.path().to_path_buf();
    resumes_per_topic(|| {
        let path = path.clone();
        Box::pin(
            async move { Ok(Box::new(EmbeddedConsumer::open(&path, "g")?) as Box<dyn Consumer>) },
        )
    })
    .await
}
