//! What the members' Prometheus metrics say of the gRPC calls they served.

use std::collections::BTreeMap;

use crate::http::samples;

/// The gRPC calls an etcd cluster has started, summed over its running members, from
/// their Prometheus metrics. Calls through the JSON gateway (`/v3/...`) count too: the
/// gateway forwards them to the member's own gRPC server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcCounts {
    /// Unary calls (`Range`, `Put`, `Txn`, `LeaseGrant`, `LeaseRevoke`, `Compact`,
    /// `Status`, ...): `grpc_server_started_total{grpc_type="unary"}`.
    pub unary: u64,
    /// Streams opened (`Watch`, `LeaseKeepAlive`, `Snapshot`, ...):
    /// `grpc_server_started_total` of the other `grpc_type`s.
    pub streams: u64,
    /// Messages that clients sent on streams (watch creations and cancellations, lease
    /// keep-alives): `grpc_server_msg_received_total` of the stream types.
    pub stream_messages: u64,
    /// The unary calls by method, `Service/Method` (`KV/Put`, `Lease/LeaseGrant`); methods
    /// never called are left out.
    pub by_method: BTreeMap<String, u64>,
}

impl GrpcCounts {
    /// Adds the counts of one member's `/metrics` page.
    pub(crate) fn add(&mut self, metrics: &str) {
        for sample in samples(metrics) {
            let unary = sample.label("grpc_type") == Some("unary");
            let value = sample.value as u64;
            match sample.name {
                "grpc_server_started_total" if unary => {
                    self.unary += value;
                    if value > 0 {
                        let service = sample.label("grpc_service").unwrap_or("?");
                        let service = service.rsplit('.').next().unwrap_or(service);
                        let method = format!("{service}/{}", sample.label("grpc_method").unwrap_or("?"));
                        *self.by_method.entry(method).or_default() += value;
                    }
                }
                "grpc_server_started_total" => self.streams += value,
                "grpc_server_msg_received_total" if !unary => self.stream_messages += value,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_unary_calls_streams_and_stream_messages() {
        let page = r#"# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 0
grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2
grpc_server_msg_received_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
"#;
        let mut counts = GrpcCounts::default();
        counts.add(page);
        counts.add(page);
        assert_eq!((counts.unary, counts.streams, counts.stream_messages), (6, 4, 10));
        assert_eq!(counts.by_method, BTreeMap::from([("KV/Put".to_string(), 6)]));
    }
}
