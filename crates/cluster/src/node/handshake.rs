//! How two nodes of a cluster recognise each other: each sends a [`Hello`] with a fresh
//! random challenge, then a [`Proof`], the HMAC-SHA-256 under the cluster's secret of the
//! other's challenge, both identities and which side it is. A connection whose other end
//! does not know the secret, belongs to another cluster, or does not speak the protocol
//! is refused, and the refusal is logged; nothing else is read from it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frames::{Hello, Proof};
use crate::wire::{self, MAX_FRAME};
use crate::NodeId;

/// How long a handshake may take before the connection is dropped.
pub(crate) const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// The longest handshake frame: a stranger cannot make a node allocate more.
const MAX_HELLO: usize = 4096;

/// Who we are, for a handshake.
pub(crate) struct Me<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) node: &'a NodeId,
    pub(crate) started_ms: u64,
    pub(crate) secret: &'a [u8],
}

/// The other side, once it has proven that it knows the secret.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) started_ms: u64,
}

/// Runs the handshake on `stream`; `dialer` says which side we are.
pub(crate) async fn handshake(stream: &mut TcpStream, me: &Me<'_>, dialer: bool) -> Result<Peer, String> {
    match tokio::time::timeout(HANDSHAKE_TIME, exchange(stream, me, dialer)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIME:?}")),
    }
}

async fn exchange(stream: &mut TcpStream, me: &Me<'_>, dialer: bool) -> Result<Peer, String> {
    let mut challenge = [0u8; 32];
    getrandom::fill(&mut challenge).map_err(|e| format!("no randomness for a challenge: {e}"))?;
    let hello = Hello { cluster: me.cluster.to_owned(), node: me.node.clone(), started_ms: me.started_ms, challenge };
    write(stream, &hello).await?;
    let theirs: Hello = read(stream).await?;
    if theirs.cluster != me.cluster {
        return Err(format!("it belongs to the cluster {:?}, not {:?}", theirs.cluster, me.cluster));
    }
    write(stream, &Proof(proof(me.secret, &theirs.challenge, me.node, &theirs.node, dialer))).await?;
    let Proof(given) = read(stream).await?;
    let expected = mac(me.secret, &challenge, &theirs.node, me.node, !dialer);
    expected.verify_slice(&given).map_err(|_| "it does not know the cluster's secret".to_owned())?;
    Ok(Peer { node: theirs.node, started_ms: theirs.started_ms })
}

/// The MAC that proves knowledge of `secret`: over the challenge, the prover's and the
/// verifier's identities, and whether the prover dialed.
fn mac(secret: &[u8], challenge: &[u8; 32], prover: &NodeId, verifier: &NodeId, prover_dialed: bool) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"latchkey-cluster node proof v1\0");
    mac.update(challenge);
    for node in [prover, verifier] {
        mac.update(&(node.addr.len() as u64).to_le_bytes());
        mac.update(node.addr.as_bytes());
        mac.update(&node.incarnation.to_le_bytes());
    }
    mac.update(&[u8::from(prover_dialed)]);
    mac
}

fn proof(secret: &[u8], challenge: &[u8; 32], prover: &NodeId, verifier: &NodeId, dialed: bool) -> [u8; 32] {
    mac(secret, challenge, prover, verifier, dialed).finalize().into_bytes().into()
}

async fn write<T: serde::Serialize>(stream: &mut TcpStream, frame: &T) -> Result<(), String> {
    let bytes = wire::encode(frame).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).await.map_err(|e| format!("cannot write: {e}"))
}

async fn read<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> Result<T, String> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(|e| format!("cannot read: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HELLO.min(MAX_FRAME) {
        return Err(format!("a handshake frame of {len} bytes, more than the {MAX_HELLO} allowed"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(|e| format!("cannot read: {e}"))?;
    wire::decode(&body).map_err(|e| format!("not a handshake frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(secrets: (&'static [u8], &'static [u8])) -> (Result<Peer, String>, Result<Peer, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = (NodeId { addr: "a:1".into(), incarnation: 1 }, NodeId { addr: "b:2".into(), incarnation: 7 });
        let accept = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let me = Me { cluster: "c", node: &b, started_ms: 2, secret: secrets.1 };
            handshake(&mut stream, &me, false).await
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let me = Me { cluster: "c", node: &a, started_ms: 1, secret: secrets.0 };
        let dialed = handshake(&mut stream, &me, true).await;
        (dialed, accept.await.unwrap())
    }

    #[tokio::test]
    async fn nodes_that_share_the_secret_recognise_each_other() {
        let (dialed, accepted) = pair((b"s3cret", b"s3cret")).await;
        let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        assert_eq!((dialed.node.addr.as_str(), dialed.node.incarnation, dialed.started_ms), ("b:2", 7, 2));
        assert_eq!((accepted.node.addr.as_str(), accepted.node.incarnation, accepted.started_ms), ("a:1", 1, 1));
    }

    #[tokio::test]
    async fn a_node_without_the_secret_is_refused() {
        let (dialed, accepted) = pair((b"s3cret", b"guess")).await;
        assert!(dialed.unwrap_err().contains("secret"));
        // The acceptor has sent its proof, which the dialer refused; it then sees the
        // connection close, or a wrong proof.
        assert!(accepted.is_err());
    }
}
