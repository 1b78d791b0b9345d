//! DescribeClientQuotas and AlterClientQuotas (KIP-546): client quotas
//! in the metadata log, as `kafka-configs.sh --entity-type users` and
//! `--entity-type clients` and Kafka's Admin API manage them.
//!
//! Alter checks every entry as Kafka's ClientQuotaControlManager does and
//! answers each with its own error: an empty or repeated entity type, an
//! empty name, an unknown key or a byte rate that is not a whole number
//! is INVALID_REQUEST with Kafka's message. Sluice also refuses what it
//! would store and not enforce (ip entities, `controller_mutation_rate`)
//! and values that are not positive (a zero rate would throttle forever).
//! The valid changes go to the controller together, unless
//! `validate_only`. Describe filters as Kafka's ClientQuotasImage.

use super::{Ctx, HandlerError, Reply};
use crate::cluster::rpc::Request;
use crate::quota::entity::{Match, Name, QuotaEntity, QuotaKey, QuotaValue, CLIENT_ID, IP, USER};
use crate::security::acl::Operation;
use crate::shard::controller;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

type Refusal = (ErrorCode, String);

fn invalid(message: impl Into<String>) -> Refusal {
    (ErrorCode::InvalidRequest, message.into())
}

/// The entity an AlterClientQuotas entry names, checked as Kafka's
/// `validateEntity` and `configKeysForEntityType`.
fn entity_of(parts: &[alter_client_quotas_request::EntityData]) -> Result<QuotaEntity, Refusal> {
    if parts.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    let mut entity = QuotaEntity::default();
    for p in parts {
        let t = p.entity_type.as_str();
        let name = p.entity_name.as_deref();
        let slot = match t {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            IP => {
                return Err(invalid(
                    "Quotas of ip entities are not supported by this broker",
                ))
            }
            _ => return Err(invalid(format!("Unhandled client quota entity type: {t}"))),
        };
        if slot.is_some() {
            return Err(invalid(format!(
                "Invalid empty client quota entity, duplicate entity entry {t}"
            )));
        }
        if name == Some("") {
            return Err(invalid(format!("Empty {t} not supported")));
        }
        *slot = Some(Name::from_wire(name));
    }
    Ok(entity)
}

/// One quota change, checked as Kafka's `validateQuotaKeyValue`.
fn change_of(
    op: &alter_client_quotas_request::OpData,
) -> Result<(QuotaKey, Option<QuotaValue>), Refusal> {
    let name = op.key.as_str();
    let key = match QuotaKey::from_name(name) {
        Some(k) => k,
        None => return Err(invalid(format!("Invalid configuration key {name}"))),
    };
    if op.remove {
        return Ok((key, None));
    }
    let v = op.value;
    if key.is_long() {
        // Kafka's check: the value plus 1e-6, truncated, within 1e-6.
        let epsilon = 1e-6;
        let long = (v + epsilon).trunc();
        if !v.is_finite() || (long - v).abs() > epsilon {
            return Err(invalid(format!(
                "Configuration {name} must be a Long value"
            )));
        }
    }
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(format!("Configuration {name} must be positive")));
    }
    Ok((key, Some(QuotaValue(v))))
}

type Changes = Vec<(QuotaKey, Option<QuotaValue>)>;

fn check_entry(
    e: &alter_client_quotas_request::EntryData,
) -> Result<(QuotaEntity, Changes), Refusal> {
    let entity = entity_of(&e.entity)?;
    let changes = e.ops.iter().map(change_of).collect::<Result<Vec<_>, _>>()?;
    Ok((entity, changes))
}

fn answer_entity(
    parts: &[alter_client_quotas_request::EntityData],
) -> Vec<alter_client_quotas_response::EntityData> {
    parts
        .iter()
        .map(|p| {
            alter_client_quotas_response::EntityData::default()
                .with_entity_type(p.entity_type.clone())
                .with_entity_name(p.entity_name.clone())
        })
        .collect()
}

pub async fn alter(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: AlterClientQuotasRequest = ctx.decode(body)?;
    let mut refusals: Vec<Option<Refusal>> = Vec::with_capacity(req.entries.len());
    let mut changes = Vec::new();
    if !ctx.cluster_allowed(Operation::AlterConfigs) {
        let denied = (ErrorCode::ClusterAuthorizationFailed, String::new());
        refusals.resize(req.entries.len(), Some(denied));
    } else {
        for e in &req.entries {
            match check_entry(e) {
                Ok((entity, ops)) => {
                    changes.extend(ops.into_iter().map(|(k, v)| (entity.clone(), k, v)));
                    refusals.push(None);
                }
                Err(refusal) => refusals.push(Some(refusal)),
            }
        }
    }
    if !changes.is_empty() && !req.validate_only {
        if let Err(refusal) =
            controller::change(ctx.shard, Request::AlterClientQuotas { changes }).await
        {
            for r in refusals.iter_mut().filter(|r| r.is_none()) {
                *r = Some(refusal.clone());
            }
        }
    }
    let entries = req
        .entries
        .iter()
        .zip(refusals)
        .map(|(e, refusal)| {
            let (code, message) = match refusal {
                None => (ErrorCode::None, None),
                Some((code, m)) if m.is_empty() => (code, None),
                Some((code, m)) => (code, Some(StrBytes::from_string(m))),
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code.code())
                .with_error_message(message)
                .with_entity(answer_entity(&e.entity))
        })
        .collect();
    ctx.respond(&AlterClientQuotasResponse::default().with_entries(entries))
}

/// A DescribeClientQuotas filter, checked as Kafka's
/// `ClientQuotasImage.describe`.
fn filter_of(req: &DescribeClientQuotasRequest) -> Result<Vec<(String, Match)>, Refusal> {
    let mut components: Vec<(String, Match)> = Vec::new();
    for c in &req.components {
        let t = c.entity_type.as_str();
        if t.is_empty() {
            return Err(invalid("Invalid empty entity type."));
        }
        if components.iter().any(|(seen, _)| seen == t) {
            return Err(invalid(format!(
                "Entity type {t} cannot appear more than once in the filter."
            )));
        }
        if ![USER, CLIENT_ID, IP].contains(&t) {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!("Unsupported entity type {t}"),
            ));
        }
        let m =
            match (c.match_type, c._match.as_deref()) {
                (0, Some(name)) => Match::Exact(name.to_string()),
                (0, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.",
                    ))
                }
                (1, None) => Match::Default,
                (1, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.",
                    ))
                }
                (2, None) => Match::Any,
                (2, Some(_)) => return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.",
                )),
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            };
        components.push((t.to_string(), m));
    }
    let has = |t: &str| components.iter().any(|(seen, _)| seen == t);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return Err(invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.",
        ));
    }
    Ok(components)
}

pub fn describe(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeClientQuotasRequest = ctx.decode(body)?;
    let refused = |code: ErrorCode, message: Option<String>| {
        ctx.respond(
            &DescribeClientQuotasResponse::default()
                .with_error_code(code.code())
                .with_error_message(message.map(StrBytes::from_string))
                .with_entries(None),
        )
    };
    if !ctx.cluster_allowed(Operation::DescribeConfigs) {
        return refused(ErrorCode::ClusterAuthorizationFailed, None);
    }
    let components = match filter_of(&req) {
        Ok(c) => c,
        Err((code, message)) => return refused(code, Some(message)),
    };
    let snapshot = ctx.shard.metadata();
    let entries = snapshot
        .quotas
        .describe(&components, req.strict)
        .into_iter()
        .map(|(entity, values)| {
            let entity = entity
                .parts()
                .into_iter()
                .map(|(t, name)| {
                    describe_client_quotas_response::EntityData::default()
                        .with_entity_type(StrBytes::from_static_str(t))
                        .with_entity_name(name.map(|n| StrBytes::from_string(n.to_string())))
                })
                .collect();
            let values = values
                .iter()
                .map(|(k, v)| {
                    describe_client_quotas_response::ValueData::default()
                        .with_key(StrBytes::from_static_str(k.name()))
                        .with_value(v.0)
                })
                .collect();
            describe_client_quotas_response::EntryData::default()
                .with_entity(entity)
                .with_values(values)
        })
        .collect();
    ctx.respond(&DescribeClientQuotasResponse::default().with_entries(Some(entries)))
}
