//! ApiVersions. An unsupported ApiVersions version is answered, not
//! refused (KIP-511): error UNSUPPORTED_VERSION, v0 encoding, and the
//! supported ranges, so the client retries with a version it finds there.

use super::{encode_frame, Ctx, HandlerError, Reply};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::api_versions::{supported_range, SUPPORTED};
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
    let _request: ApiVersionsRequest = ctx.decode(body)?;
    let resp = ApiVersionsResponse::default().with_api_keys(ranges());
    ctx.respond(&resp)
}
