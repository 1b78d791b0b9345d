//! Apache Kafka itself, for the harness's tests against it: one combined
//! KRaft node (see the engine's `tests/common/kafka_node.rs`), killed with
//! the test process.

#[path = "../../../engine/tests/common/kafka_node.rs"]
mod node;

use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use node::KafkaNode;

pub use sluice_engine::cluster::local::free_port;

/// The server properties every test's node shares, after its own
/// `listeners` lines: the node's defaults for tests, with
/// `__transaction_state` in one partition too.
pub fn common_properties(controller: u16, data: &Path) -> String {
    format!(
        "{}transaction.state.log.num.partitions=1\n",
        node::common_properties(controller, data)
    )
}

/// Formats the storage of `props` in `dir` (with `format_args` added to
/// Kafka's StorageTool, e.g. `--add-scram`), starts the broker and waits
/// until Metadata on `ready_at` names it.
pub fn start(
    dir: tempfile::TempDir,
    props: &str,
    cluster_id: &str,
    format_args: &[String],
    ready_at: SocketAddr,
) -> KafkaNode {
    let ready = || {
        Connection::connect(ready_at, Duration::from_secs(5))
            .and_then(|mut c| admin::metadata(&mut c, Some(&[])))
            .is_ok_and(|md| !md.brokers.is_empty())
    };
    let lib = node::lib_dir();
    node::KafkaNode::start(&lib, dir, props, cluster_id, format_args, ready)
        .unwrap_or_else(|log| panic!("Kafka exited {log}"))
}
