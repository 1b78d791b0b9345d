//! A single-node KRaft Apache Kafka for the differential tests (see
//! `common/kafka_node.rs`): Kafka's defaults except what one node needs and
//! two settings also given to Sluice (see `docs/DIFFERENTIAL.md`), on two
//! free loopback ports (clients and controller).

#[path = "../common/kafka_node.rs"]
mod node;

use crate::common::{free_port, Raw};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use std::net::SocketAddr;
use std::time::Duration;

/// The cluster id Kafka's storage is formatted with: 16 bytes in unpadded
/// base64url, as `kafka-storage random-uuid` prints. Any fixed value will
/// do, the data directory is new every run.
const CLUSTER_ID: &str = "c2x1aWNlLWRpZmYtdGVzdA";

pub struct Kafka {
    node: node::KafkaNode,
    pub port: u16,
}

impl Kafka {
    /// Starts Kafka on free ports. A port found free can be taken by
    /// another process before Kafka binds it: a start that fails on a
    /// port in use is tried again on others, up to three times.
    pub fn start() -> Kafka {
        let lib = node::lib_dir();
        let mut attempt = 1;
        loop {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (port, controller) = (free_port(), free_port());
            let props = format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
{}",
                node::common_properties(controller, &dir.path().join("data"))
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match node::KafkaNode::start(&lib, dir, &props, CLUSTER_ID, &[], || {
                brokers_listed(addr) >= 1
            }) {
                Ok(node) => return Kafka { node, port },
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    eprintln!("Kafka found a port taken (attempt {attempt}); trying others");
                    attempt += 1;
                }
                Err(log) => panic!("Kafka exited early:\n{log}"),
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The end of Kafka's server log and standard output, for failures.
    pub fn log_tail(&self) -> String {
        self.node.log_tail()
    }
}

/// The brokers Metadata names (0 while Kafka does not answer).
fn brokers_listed(addr: SocketAddr) -> usize {
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Raw { stream };
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: Option<MetadataResponse> =
        crate::common::try_call(&mut raw, ApiKey::Metadata, 1, &req);
    resp.map_or(0, |r| r.brokers.len())
}
