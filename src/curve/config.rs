//! The client's settings: MDS addresses, deadlines, retry timing and limits, with defaults from
//! Curve's `conf/client.conf` where they exist, and the one bound libcurve lacks: a deadline
//! after which an operation fails instead of retrying forever (curve-tgt.md §7.5).

use std::net::SocketAddr;
use std::time::Duration;

use super::frame::FrameLimits;

/// Everything the sans-IO client is configured with.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// MDS addresses (`mds.listen.addr`); the client fails over between them.
    pub mds_addrs: Vec<SocketAddr>,
    /// Failed MDS RPCs before switching to the next address (`mds.maxFailedTimesBeforeChangeMDS`).
    pub mds_failures_before_switch: u32,
    /// One MDS RPC's timeout.
    pub mds_rpc_timeout: Duration,
    /// How long any operation (I/O or MDS call) may keep retrying before it fails. Below the
    /// initiator's usual 30 s SCSI command timeout, so the target answers before it aborts.
    pub op_deadline: Duration,
    /// First chunk-server RPC timeout (`chunkserver.rpcTimeoutMS`); doubles per timeout.
    pub rpc_timeout: Duration,
    /// Largest chunk-server RPC timeout (`chunkserver.maxRPCTimeoutMS`).
    pub rpc_timeout_max: Duration,
    /// Base delay between retries after a failure (`chunkserver.opRetryIntervalUS`).
    pub retry_interval: Duration,
    /// Largest delay between retries (`chunkserver.maxRetrySleepIntervalUS`).
    pub retry_interval_max: Duration,
    /// Largest piece of data in one chunk RPC (`global.fileIOSplitMaxSizeKB`, 64 KiB).
    pub max_rpc_bytes: u32,
    /// Chunk RPCs in flight at once (`global.fileMaxInFlightRPCNum`).
    pub max_inflight_rpcs: usize,
    /// How long a chunk server that refused a connection is left alone.
    pub reconnect_holdoff: Duration,
    /// This client's address as reported to the MDS in RefreshSession/CloseFile.
    pub client_ip: String,
    /// This client's port as reported to the MDS.
    pub client_port: u32,
    /// Frame size limits for replies.
    pub frame_limits: FrameLimits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            mds_addrs: Vec::new(),
            mds_failures_before_switch: 2,
            mds_rpc_timeout: Duration::from_secs(2),
            op_deadline: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(1),
            rpc_timeout_max: Duration::from_secs(8),
            retry_interval: Duration::from_millis(100),
            retry_interval_max: Duration::from_secs(8),
            max_rpc_bytes: 64 << 10,
            max_inflight_rpcs: 128,
            reconnect_holdoff: Duration::from_millis(200),
            client_ip: "127.0.0.1".to_string(),
            client_port: 0,
            frame_limits: FrameLimits::default(),
        }
    }
}

/// Why a client.conf or an address list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file has no `mds.listen.addr` line.
    #[error("no mds.listen.addr in the client configuration")]
    NoMdsAddr,
    /// An address is not `ip:port`.
    #[error("MDS address {0:?} is not ip:port")]
    BadAddr(String),
}

/// Parses a comma-separated `ip:port` list, as `mds.listen.addr` and `--mds` take it.
pub fn parse_addr_list(list: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let addrs: Result<Vec<SocketAddr>, _> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| ConfigError::BadAddr(s.to_string())))
        .collect();
    let addrs = addrs?;
    if addrs.is_empty() {
        return Err(ConfigError::NoMdsAddr);
    }
    Ok(addrs)
}

/// The MDS addresses from a Curve `client.conf` (`key=value` lines, `#` comments).
pub fn mds_addrs_from_client_conf(text: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let value = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == "mds.listen.addr")
        .map(|(_, v)| v.trim())
        .next_back()
        .ok_or(ConfigError::NoMdsAddr)?;
    parse_addr_list(value)
}

/// Where Curve keeps the client configuration (curve-tgt's hard-coded `CURVE_CONF_PATH`).
pub const DEFAULT_CLIENT_CONF: &str = "/etc/curve/client.conf";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mds_listen_addr() {
        let conf =
            "# comment\nmds.registerToMDS=true\nmds.listen.addr=127.0.0.1:6666, 127.0.0.2:6667\n";
        let a = mds_addrs_from_client_conf(conf).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1], "127.0.0.2:6667".parse().unwrap());
    }

    #[test]
    fn refuses_missing_and_bad_addresses() {
        assert_eq!(
            mds_addrs_from_client_conf("a=b\n"),
            Err(ConfigError::NoMdsAddr)
        );
        assert_eq!(
            mds_addrs_from_client_conf("#mds.listen.addr=1.2.3.4:5\n"),
            Err(ConfigError::NoMdsAddr)
        );
        assert_eq!(
            parse_addr_list("host:66"),
            Err(ConfigError::BadAddr("host:66".into()))
        );
        assert_eq!(parse_addr_list(" , "), Err(ConfigError::NoMdsAddr));
    }

    #[test]
    fn default_deadline_is_below_the_initiator_timeout() {
        assert!(ClientConfig::default().op_deadline < Duration::from_secs(30));
    }
}
