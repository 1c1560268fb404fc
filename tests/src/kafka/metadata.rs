//! A minimal Kafka Metadata (v2) exchange, enough to tell that a broker is up and whose it is.
//!
//! Design: the harness must not depend on librdkafka (slow to build), and readiness needs only
//! the cluster id and the broker list, so the one request is written by hand: request header
//! v1 (api key 3, version 2, correlation id, client id) and an empty topic array (v1+: empty
//! means "no topics"); the response (header v0) is parsed up to the cluster id. Metadata v2 is
//! the first version carrying the cluster id and the last before throttle time was added.

use anyhow::{bail, ensure, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Metadata API key.
const METADATA_API_KEY: i16 = 3;

/// The Metadata version spoken here.
const METADATA_VERSION: i16 = 2;

/// The correlation id of the one request.
const CORRELATION_ID: i32 = 0x7472_6962;

/// The client id sent to the broker.
const CLIENT_ID: &str = "tributary-tests";

/// The largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// One broker listed in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    /// The broker's node id.
    pub(crate) node_id: i32,
    /// The advertised host.
    pub(crate) host: String,
    /// The advertised port.
    pub(crate) port: i32,
}

/// The part of a Metadata response the harness reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// The brokers of the cluster.
    pub(crate) brokers: Vec<Broker>,
    /// The cluster id, if the broker reports one.
    pub(crate) cluster_id: Option<String>,
}

/// Connects to `address` and asks for cluster metadata without topics.
pub(crate) async fn fetch(address: &str) -> anyhow::Result<Metadata> {
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream
        .write_all(&request())
        .await
        .context("sending a Metadata request")?;
    let size = stream
        .read_i32()
        .await
        .context("reading the Metadata response size")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|size| *size <= MAX_RESPONSE);
    let Some(size) = size else {
        bail!("the Metadata response has an impossible size")
    };
    let mut body = vec![0; size];
    stream
        .read_exact(&mut body)
        .await
        .context("reading the Metadata response")?;
    parse(&body)
}

/// Encodes the request, size prefix included.
fn request() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&METADATA_API_KEY.to_be_bytes());
    body.extend_from_slice(&METADATA_VERSION.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID.as_bytes());
    body.extend_from_slice(&0_i32.to_be_bytes());
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

/// Decodes a response body (after the size prefix) up to the cluster id.
fn parse(body: &[u8]) -> anyhow::Result<Metadata> {
    let mut reader = Reader { bytes: body };
    let correlation_id = reader.i32()?;
    ensure!(
        correlation_id == CORRELATION_ID,
        "the response answers another request ({correlation_id})"
    );
    let count = reader.i32()?;
    ensure!(
        (0..=10_000).contains(&count),
        "the response lists {count} brokers"
    );
    let mut brokers = Vec::new();
    for _ in 0..count {
        let node_id = reader.i32()?;
        let host = reader.string()?.unwrap_or_default();
        let port = reader.i32()?;
        let _rack = reader.string()?;
        brokers.push(Broker {
            node_id,
            host,
            port,
        });
    }
    let cluster_id = reader.string()?;
    Ok(Metadata {
        brokers,
        cluster_id,
    })
}

/// Reads big-endian Kafka primitives from a byte slice.
struct Reader<'a> {
    /// The bytes not read yet.
    bytes: &'a [u8],
}

impl Reader<'_> {
    /// Takes `n` bytes.
    fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        ensure!(self.bytes.len() >= n, "the Metadata response is truncated");
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Reads an INT16.
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }

    /// Reads an INT32.
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }

    /// Reads a NULLABLE_STRING (length -1 is null).
    fn string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        Ok(Some(
            String::from_utf8(bytes.to_vec()).context("a string in the Metadata response")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                out.extend_from_slice(&(s.len() as i16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(&(-1_i16).to_be_bytes()),
        }
    }

    #[test]
    fn request_is_framed_metadata_v2_without_topics() {
        let bytes = request();
        let size = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(size, bytes.len() - 4);
        assert_eq!(&bytes[4..8], &[0, 3, 0, 2]);
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 0, 0, 0]);
    }

    #[test]
    fn parses_brokers_and_cluster_id() {
        let mut body = CORRELATION_ID.to_be_bytes().to_vec();
        body.extend_from_slice(&1_i32.to_be_bytes());
        body.extend_from_slice(&111_i32.to_be_bytes());
        string(&mut body, Some("127.0.0.1"));
        body.extend_from_slice(&9092_i32.to_be_bytes());
        string(&mut body, None);
        string(&mut body, Some("c1"));
        body.extend_from_slice(&111_i32.to_be_bytes());
        body.extend_from_slice(&0_i32.to_be_bytes());
        let metadata = parse(&body).unwrap();
        assert_eq!(
            metadata,
            Metadata {
                brokers: vec![Broker {
                    node_id: 111,
                    host: "127.0.0.1".into(),
                    port: 9092
                }],
                cluster_id: Some("c1".into()),
            }
        );
    }

    #[test]
    fn rejects_truncated_and_foreign_responses() {
        assert!(parse(&CORRELATION_ID.to_be_bytes()).is_err());
        assert!(parse(&[0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }
}
