//! The one question every handler asks before touching a resource: may
//! this client do that? See [`crate::security::acl`].

use super::Ctx;
use crate::security::acl::{apis, Operation, ResourceType, CLUSTER_NAME};

impl Ctx<'_> {
    /// Whether the client may do `operation` on resource
    /// (`resource_type`, `name`). Always true without an authorizer.
    /// Ask once per resource of a request, not per record.
    pub fn allowed(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        debug_assert!(
            apis::requires(self.api, operation, resource_type),
            "{:?} checks {operation:?} on {resource_type:?}, which security::acl::apis does not list",
            self.api
        );
        let ok = self.authorize_quietly(operation, resource_type, name);
        if !ok {
            tracing::debug!(
                principal = %self.client.principal.borrow(), host = self.acl_host(), ?operation,
                ?resource_type, resource = name, api = ?self.api, "denied"
            );
        }
        ok
    }

    /// The operations the client may do on a resource, as the
    /// `authorized_operations` bit fields of Metadata, DescribeCluster,
    /// DescribeGroups and DescribeTopicPartitions report them (KIP-430):
    /// bit n set for the operation of code n, among those Kafka reports
    /// for the resource type.
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        use Operation::*;
        let ops: &[Operation] = match resource_type {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            _ => &[],
        };
        ops.iter()
            .filter(|op| self.authorize_quietly(**op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// The authorizer's answer, without the table check or a log line.
    fn authorize_quietly(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let authorizer = &self.shard.broker.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        let principal = self.client.principal.borrow();
        let acls = &self.shard.metadata().acls;
        authorizer.authorize(
            acls,
            &principal,
            self.acl_host(),
            operation,
            resource_type,
            name,
        )
    }

    /// Whether the client may do `operation` on some resource of
    /// `resource_type` (an idempotent producer's WRITE on any topic).
    pub fn allowed_on_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        debug_assert!(apis::requires(self.api, operation, resource_type));
        let authorizer = &self.shard.broker.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        let principal = self.client.principal.borrow();
        let acls = &self.shard.metadata().acls;
        authorizer.authorize_any(acls, &principal, self.acl_host(), operation, resource_type)
    }

    /// The client's IP address, as ACLs name hosts.
    fn acl_host(&self) -> &str {
        let host = &self.client.host;
        host.strip_prefix('/').unwrap_or(host)
    }

    /// [`Ctx::allowed`] on the cluster resource.
    pub fn cluster_allowed(&self, operation: Operation) -> bool {
        self.allowed(operation, ResourceType::Cluster, CLUSTER_NAME)
    }
}
