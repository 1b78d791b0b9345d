//! ApiVersions. An unsupported ApiVersions version is answered, not
//! refused (KIP-511): error UNSUPPORTED_VERSION, v0 encoding, and the
//! supported ranges, so the client retries with a version it finds there.
//!
//! From v5 (KIP-1242) a client may name the cluster and node it means to
//! reach. As Kafka 4.4 answers: one named without the other is
//! INVALID_REQUEST; both named and either not this broker's is
//! REBOOTSTRAP_REQUIRED, so the client looks the cluster up again from
//! its bootstrap servers instead of talking to the wrong broker. Either
//! answer carries no version ranges, and the connection stays open.

use super::{encode_frame, Ctx, HandlerError, Reply};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::api_versions::{supported_range, SUPPORTED};
use sluice_protocol::api_versions_request::{self as v5, Target, TARGET_VERSION};
use sluice_protocol::ErrorCode;

fn ranges() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

pub fn handle(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let range = supported_range(ApiKey::ApiVersions).expect("ApiVersions is supported");
    let version = ctx.version();
    if version < range.min || version > range.max {
        tracing::info!(version, client = ?ctx.header.client_id, "unsupported ApiVersions version; answering with v0");
        let resp = ApiVersionsResponse::default()
            .with_error_code(ErrorCode::UnsupportedVersion.code())
            .with_api_keys(ranges());
        return encode_frame(ApiKey::ApiVersions, 0, ctx.header.correlation_id, &resp)
            .map(Reply::Frame);
    }
    if version < TARGET_VERSION {
        let _request: ApiVersionsRequest = ctx.decode(body)?;
        return ctx.respond(&ApiVersionsResponse::default().with_api_keys(ranges()));
    }
    let request = ctx.decoded(v5::ApiVersionsRequest::decode(&body))?;
    // The id the metadata quorum gave the cluster; until this broker has
    // seen it (a moment after a start), the one its data directory holds.
    let cluster_id = match ctx.shard.metadata().cluster_id.as_str() {
        "" => ctx.shard.broker.data_cluster_id.clone(),
        id => Some(id.to_string()),
    };
    let node_id = ctx.shard.broker.config.node_id;
    let resp = match request.target(cluster_id.as_deref(), node_id) {
        Target::Unnamed | Target::Here => ApiVersionsResponse::default().with_api_keys(ranges()),
        Target::HalfNamed => {
            ApiVersionsResponse::default().with_error_code(ErrorCode::InvalidRequest.code())
        }
        Target::Elsewhere => {
            tracing::info!(
                asked_cluster = ?request.cluster_id, asked_node = request.node_id,
                cluster = ?cluster_id, node = node_id, client = ?ctx.header.client_id,
                "ApiVersions meant for another broker; answering REBOOTSTRAP_REQUIRED"
            );
            ApiVersionsResponse::default().with_error_code(ErrorCode::RebootstrapRequired.code())
        }
    };
    // v5's response is v4's bytes; ApiVersions answers use header v0 at
    // every version, so the frame is the same too.
    encode_frame(ApiKey::ApiVersions, 4, ctx.header.correlation_id, &resp).map(Reply::Frame)
}
