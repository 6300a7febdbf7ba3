//! tgtd's shards as the control thread's [`DataPlane`]. The trait lives in the control plane and
//! its implementation here, so imports run one way: `mgmt` uses `shard`, never the reverse.
//! Every call forwards to [`Plane`], which only sends messages and returns.

use super::server::DataPlane;
use crate::config::snapshot::ConfigSnapshot;
use crate::scsi::{Lun, UnitAttention};
use crate::shard::limits::AdmissionCounts;
use crate::shard::plane::Plane;
use crate::shard::stats::ShardStats;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

impl DataPlane for Plane {
    fn publish(&self, snap: Arc<ConfigSnapshot>) {
        Plane::publish(self, snap)
    }
    fn raise_ua(&self, tid: u32, lun: Option<Lun>, ua: UnitAttention) {
        Plane::raise_ua(self, tid, lun, ua)
    }
    fn close_session(&self, tid: u32, tsih: u16) {
        Plane::close_session(self, tid, tsih)
    }
    fn add_portal(&self, addr: SocketAddr) -> io::Result<()> {
        Plane::add_portal(self, addr)
    }
    fn remove_portal(&self, addr: SocketAddr) -> io::Result<()> {
        Plane::remove_portal(self, addr)
    }
    fn stats(&self) -> Vec<ShardStats> {
        Plane::stats(self)
    }
    fn admission(&self) -> AdmissionCounts {
        Plane::admission(self)
    }
    fn shutdown(&self) {
        Plane::shutdown(self)
    }
}
