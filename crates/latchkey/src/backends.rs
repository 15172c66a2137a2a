//! The scopes over a network, each an optional crate behind a Cargo feature of this one.

use std::sync::Arc;

use latchkey_model::{Error, ErrorKind, RawScope, Result};

/// Opens the scope over a network that `url` names, blocking while it connects.
pub(crate) fn open_blocking(engine: &str, url: &str) -> Result<Arc<dyn RawScope>> {
    match engine {
        #[cfg(feature = "etcd")]
        "etcd" => Ok(Arc::new(latchkey_etcd::EtcdScope::open(url)?)),
        #[cfg(feature = "postgres")]
        "postgres" => Ok(Arc::new(latchkey_postgres::PostgresScope::open(url)?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(Arc::new(latchkey_redis::RedisScope::open(url)?)),
        _ => Err(missing(engine, url)),
    }
}

/// Connects to the scope over a network that `url` names.
pub(crate) async fn connect(engine: &str, url: &str) -> Result<Arc<dyn RawScope>> {
    match engine {
        #[cfg(feature = "etcd")]
        "etcd" => Ok(Arc::new(latchkey_etcd::EtcdScope::connect(url).await?)),
        #[cfg(feature = "postgres")]
        "postgres" => Ok(Arc::new(latchkey_postgres::PostgresScope::connect(url).await?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(Arc::new(latchkey_redis::RedisScope::connect(url).await?)),
        _ => Err(missing(engine, url)),
    }
}

/// The error for an engine this build has no scope for.
fn missing(engine: &str, url: &str) -> Error {
    let why = match engine {
        "etcd" | "postgres" | "redis" => {
            format!("this build of latchkey has no {engine} scope: build it with the Cargo feature `{engine}`")
        }
        _ => format!("latchkey has no {engine} scope yet"),
    };
    Error::new(ErrorKind::Unsupported, why).with_scope(latchkey_model::redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_left_out_of_the_build_is_named_with_its_feature() {
        let err = missing("etcd", "etcd://db/x");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("Cargo feature `etcd`"), "{err}");
        assert_eq!(err.scope(), Some("etcd://db/x"));
    }
}
