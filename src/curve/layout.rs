//! The layout cache: which chunk holds a byte of the volume, which copyset holds the chunk,
//! which chunk servers serve the copyset (curve-tgt.md §7.3).
//!
//! A [`Layout`] is immutable once published and shared by `Arc`: the MDS session (one per
//! volume, off the shards) builds a new one when it learns something and hands the `Arc` to
//! every shard; a shard reads its own snapshot on the data path without locks. Segment and
//! copyset entries are `Arc`s themselves, so publishing a new layout copies only the maps.
//! Leaders are not here: they change often and each shard learns them on its own connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::ids::{ChunkId, ChunkServerId, CopysetId, CopysetKey, LogicalPoolId};

/// A volume's fixed geometry, from the MDS FileInfo.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The MDS inode id (`fileId` in WriteChunk).
    pub file_id: u64,
    /// Volume length in bytes.
    pub length: u64,
    /// Chunk size (16 MiB by default).
    pub chunk_size: u32,
    /// Segment size (1 GiB by default).
    pub segment_size: u32,
    /// Block size I/O must be aligned to (4096 by default).
    pub block_size: u32,
}

impl Geometry {
    /// The segment index holding `offset`.
    pub fn segment_index(&self, offset: u64) -> u64 {
        offset / u64::from(self.segment_size)
    }

    /// Chunks per segment.
    pub fn chunks_per_segment(&self) -> u32 {
        self.segment_size / self.chunk_size
    }

    /// Checks a geometry the MDS sent before the client divides by it.
    pub fn is_sane(&self) -> bool {
        self.chunk_size >= 4096
            && self.segment_size >= self.chunk_size
            && self.segment_size % self.chunk_size == 0
            && self.block_size >= 512
            && self.block_size.is_power_of_two()
            && self.chunk_size % self.block_size == 0
    }
}

/// One segment's chunks, or the fact that it has none yet (reads give zeros).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Allocated: chunk `i` of the segment is `chunks[i]`.
    Allocated {
        /// The logical pool of every chunk in it.
        pool: LogicalPoolId,
        /// (chunk, copyset) per chunk index within the segment.
        chunks: Vec<(ChunkId, CopysetId)>,
    },
    /// The MDS answered kSegmentNotAllocated to a read.
    Unallocated,
}

/// A chunk server as the topology gives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: ChunkServerId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Whether the volume's session lets I/O through (curve-tgt.md §7.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoGate {
    /// The lease is valid.
    Open,
    /// I/O waits (until its deadline) for the session to recover: lease expired, owner refused.
    Blocked(Arc<str>),
    /// I/O fails at once: the volume is gone or was replaced.
    Closed(Arc<str>),
}

/// An immutable snapshot of what the client knows about a volume's layout.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Bumped for every published change.
    pub version: u64,
    /// The volume's geometry.
    pub geometry: Geometry,
    /// The file sequence number writes carry (`sn`); a snapshot bumps it.
    pub seq_num: u64,
    /// Segments by index.
    pub segments: HashMap<u64, Arc<Segment>>,
    /// Copyset members.
    pub copysets: HashMap<CopysetKey, Arc<Vec<Member>>>,
    /// Whether I/O may proceed.
    pub gate: IoGate,
    /// Where a lazy clone's unwritten chunks come from (`None`: not a clone).
    pub clone: Option<Arc<super::clone_source::CloneSource>>,
}

impl Layout {
    /// An empty layout for a volume just opened.
    pub fn new(geometry: Geometry, seq_num: u64) -> Layout {
        Layout {
            version: 1,
            geometry,
            seq_num,
            segments: HashMap::new(),
            copysets: HashMap::new(),
            gate: IoGate::Open,
            clone: None,
        }
    }

    /// The chunk and copyset holding byte `offset`, if its segment is known and allocated.
    pub fn locate(&self, offset: u64) -> Locate {
        let g = &self.geometry;
        let Some(seg) = self.segments.get(&g.segment_index(offset)) else {
            return Locate::SegmentUnknown;
        };
        match &**seg {
            Segment::Unallocated => Locate::Unallocated,
            Segment::Allocated { pool, chunks } => {
                let idx = (offset % u64::from(g.segment_size)) / u64::from(g.chunk_size);
                match chunks.get(idx as usize) {
                    Some(&(chunk, copyset)) => Locate::Chunk {
                        chunk,
                        key: CopysetKey {
                            pool: *pool,
                            copyset,
                        },
                    },
                    None => Locate::SegmentShort,
                }
            }
        }
    }
}

/// Where a byte lives, as far as a layout knows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Locate {
    /// Its segment has not been fetched.
    SegmentUnknown,
    /// Its segment is not allocated.
    Unallocated,
    /// The MDS sent fewer chunks than the segment holds.
    SegmentShort,
    /// In this chunk of this copyset.
    Chunk {
        /// The chunk.
        chunk: ChunkId,
        /// Its copyset.
        key: CopysetKey,
    },
}

/// Something the chunk I/O engine cannot go on without, asked of the MDS session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LayoutNeed {
    /// A segment's chunk map (`allocate` for writes: GetOrAllocateSegment allocates it).
    Segment {
        /// Segment index.
        index: u64,
        /// Allocate if missing.
        allocate: bool,
    },
    /// The members of copysets (GetChunkServerListInCopySets).
    Copysets {
        /// The logical pool.
        pool: LogicalPoolId,
        /// The copysets.
        ids: Vec<CopysetId>,
    },
    /// A fresh file sequence number, after a chunk server answered BACKWARD (a snapshot).
    SeqNum,
}

/// One chunk RPC's worth of an operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Byte offset in the volume.
    pub file_offset: u64,
    /// Byte offset within the operation's buffer.
    pub op_offset: usize,
    /// Offset within the chunk.
    pub chunk_offset: u32,
    /// Length.
    pub len: u32,
}

/// Splits `[offset, offset + len)` at chunk boundaries and into pieces of at most `max_rpc`
/// bytes (Curve `src/client/splitor.cpp`). `max_rpc` must be nonzero.
pub fn split(chunk_size: u32, offset: u64, len: usize, max_rpc: u32) -> Vec<Span> {
    let mut out = Vec::with_capacity(len / max_rpc.max(1) as usize + 2);
    let mut done = 0usize;
    while done < len {
        let file_offset = offset + done as u64;
        let chunk_offset = (file_offset % u64::from(chunk_size)) as u32;
        let to_chunk_end = (chunk_size - chunk_offset) as usize;
        let take = (len - done).min(to_chunk_end).min(max_rpc as usize);
        out.push(Span {
            file_offset,
            op_offset: done,
            chunk_offset,
            len: take as u32,
        });
        done += take;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_write_across_a_chunk_boundary_splits_there() {
        let s = split(16 << 20, 16 * MIB - 8192, 16384, 64 << 10);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].chunk_offset, (16 << 20) - 8192);
        assert_eq!(s[0].len, 8192);
        assert_eq!(s[1].chunk_offset, 0);
        assert_eq!(s[1].op_offset, 8192);
    }

    #[test]
    fn one_mib_is_sixteen_rpcs() {
        assert_eq!(split(16 << 20, 0, 1 << 20, 64 << 10).len(), 16);
    }

    #[test]
    fn locate_maps_offsets_to_chunks() {
        let g = Geometry {
            file_id: 3,
            length: 10 << 30,
            chunk_size: 16 << 20,
            segment_size: 1 << 30,
            block_size: 4096,
        };
        let mut l = Layout::new(g, 1);
        let chunks = (0..64)
            .map(|i| (ChunkId(100 + i), CopysetId(i as u32 % 10 + 1)))
            .collect();
        l.segments.insert(
            1,
            Arc::new(Segment::Allocated {
                pool: LogicalPoolId(1),
                chunks,
            }),
        );
        l.segments.insert(2, Arc::new(Segment::Unallocated));
        assert_eq!(l.locate(0), Locate::SegmentUnknown);
        assert_eq!(l.locate(2 << 30), Locate::Unallocated);
        assert_eq!(
            l.locate((1 << 30) + 16 * MIB + 5),
            Locate::Chunk {
                chunk: ChunkId(101),
                key: CopysetKey {
                    pool: LogicalPoolId(1),
                    copyset: CopysetId(2)
                }
            }
        );
    }

    proptest! {
        /// Pieces cover the range exactly, in order, never cross a chunk, never exceed max_rpc.
        #[test]
        fn split_covers_exactly(offset in 0u64..(1 << 36), len in 0usize..(40 << 20), max_kib in 1u32..256) {
            let chunk = 16u32 << 20;
            let max = max_kib << 10;
            let s = split(chunk, offset, len, max);
            let mut next = offset;
            let mut op = 0usize;
            for p in &s {
                prop_assert_eq!(p.file_offset, next);
                prop_assert_eq!(p.op_offset, op);
                prop_assert!(p.len > 0 && p.len <= max);
                prop_assert!(u64::from(p.chunk_offset) + u64::from(p.len) <= u64::from(chunk));
                prop_assert_eq!(u64::from(p.chunk_offset), p.file_offset % u64::from(chunk));
                next += u64::from(p.len);
                op += p.len as usize;
            }
            prop_assert_eq!(op, len);
        }
    }
}
