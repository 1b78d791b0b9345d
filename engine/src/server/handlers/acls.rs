//! CreateAcls, DescribeAcls and DeleteAcls. ACLs live in the metadata
//! log: a creation or deletion is a change the controller commits, and
//! the answer comes once every shard of this broker holds it. A bad
//! binding or filter fails its own entry with INVALID_REQUEST; without an
//! authorizer the APIs answer SECURITY_DISABLED, as Kafka does.

use super::{Ctx, HandlerError, Reply};
use crate::cluster::rpc::Request;
use crate::security::acl::{AclBinding, AclFilter, Operation};
use crate::shard::controller;
use bytes::Bytes;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::BTreeMap;

const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker.";

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Why the whole request is refused, if it is: no authorizer, or the
/// client may not `operation` the cluster.
fn refusal(ctx: &Ctx<'_>, operation: Operation) -> Option<(ErrorCode, String)> {
    if !ctx.shard.broker.authorizer.enabled() {
        return Some((ErrorCode::SecurityDisabled, NO_AUTHORIZER.into()));
    }
    if !ctx.cluster_allowed(operation) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        ));
    }
    None
}

pub async fn create_acls(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: CreateAclsRequest = ctx.decode(body)?;
    let result = |outcome: Result<(), (ErrorCode, String)>| match outcome {
        Ok(()) => AclCreationResult::default().with_error_message(None),
        Err((code, message)) => AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(s(message))),
    };
    if let Some(refused) = refusal(ctx, Operation::Alter) {
        let results = req.creations.iter().map(|_| result(Err(refused.clone())));
        return ctx.respond(&CreateAclsResponse::default().with_results(results.collect()));
    }
    let checked: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let committed = if valid.is_empty() {
        Ok(0)
    } else {
        let req = Request::CreateAcls { bindings: valid };
        controller::change(ctx.shard, req).await
    };
    let results = checked
        .into_iter()
        .map(|c| match c {
            Err(why) => result(Err((ErrorCode::InvalidRequest, why))),
            Ok(_) => result(committed.clone().map(|_| ())),
        })
        .collect();
    ctx.respond(&CreateAclsResponse::default().with_results(results))
}

/// A wire filter of DescribeAcls or DeleteAcls.
macro_rules! filter {
    ($f:expr) => {
        AclFilter::from_wire(
            $f.resource_type_filter,
            $f.resource_name_filter.as_deref(),
            $f.pattern_type_filter,
            $f.principal_filter.as_deref(),
            $f.host_filter.as_deref(),
            $f.operation,
            $f.permission_type,
        )
    };
}

pub fn describe_acls(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeAclsRequest = ctx.decode(body)?;
    let refused = |code: ErrorCode, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(s(message)))
    };
    if let Some((code, message)) = refusal(ctx, Operation::Describe) {
        return ctx.respond(&refused(code, message));
    }
    let filter = match filter!(req) {
        Ok(f) => f,
        Err(why) => return ctx.respond(&refused(ErrorCode::InvalidRequest, why)),
    };
    let snapshot = ctx.shard.metadata();
    // Bindings come sorted by resource, so each resource's ACLs are
    // adjacent; the map keeps them grouped regardless.
    let mut resources: BTreeMap<_, Vec<AclDescription>> = BTreeMap::new();
    for b in snapshot.acls.bindings().filter(|b| filter.matches(b)) {
        resources
            .entry((b.resource_type, b.name.clone(), b.pattern))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(b.principal.clone()))
                    .with_host(s(b.host.clone()))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((t, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(t.code())
                .with_resource_name(s(name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    ctx.respond(
        &DescribeAclsResponse::default()
            .with_error_message(None)
            .with_resources(resources),
    )
}

pub async fn delete_acls(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DeleteAclsRequest = ctx.decode(body)?;
    let failed = |code: ErrorCode, message: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(s(message)))
    };
    if let Some((code, message)) = refusal(ctx, Operation::Alter) {
        let results = req.filters.iter().map(|_| failed(code, message.clone()));
        return ctx.respond(&DeleteAclsResponse::default().with_filter_results(results.collect()));
    }
    let snapshot = ctx.shard.metadata();
    let matched: Vec<Result<Vec<AclBinding>, String>> = req
        .filters
        .iter()
        .map(|f| {
            let filter = filter!(f)?;
            Ok(snapshot
                .acls
                .bindings()
                .filter(|b| filter.matches(b))
                .cloned()
                .collect())
        })
        .collect();
    let mut doomed: Vec<AclBinding> = matched.iter().flatten().flatten().cloned().collect();
    doomed.sort();
    doomed.dedup();
    let committed = if doomed.is_empty() {
        Ok(0)
    } else {
        controller::change(ctx.shard, Request::DeleteAcls { bindings: doomed }).await
    };
    let results = matched
        .into_iter()
        .map(|m| match (m, &committed) {
            (Err(why), _) => failed(ErrorCode::InvalidRequest, why),
            (Ok(_), Err((code, message))) => failed(*code, message.clone()),
            (Ok(bindings), Ok(_)) => DeleteAclsFilterResult::default()
                .with_error_message(None)
                .with_matching_acls(bindings.iter().map(matching).collect()),
        })
        .collect();
    ctx.respond(&DeleteAclsResponse::default().with_filter_results(results))
}

fn matching(b: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_error_message(None)
        .with_resource_type(b.resource_type.code())
        .with_resource_name(s(b.name.clone()))
        .with_pattern_type(b.pattern.code())
        .with_principal(s(b.principal.clone()))
        .with_host(s(b.host.clone()))
        .with_operation(b.operation.code())
        .with_permission_type(b.permission.code())
}
