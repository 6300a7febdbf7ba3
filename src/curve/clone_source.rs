//! Lazy clones: where the data of a cloned volume's never-written chunks comes from.
//!
//! A volume made by MDS CreateCloneFile (`cloneSource` = the source volume's path,
//! `cloneLength` = its length) and set to `kFileCloneMetaInstalled` is readable at once, before
//! any data is copied: its chunks do not exist yet on the chunk servers. A client then names
//! the source in every ReadChunk and WriteChunk of the cloned range (`cloneFileSource`,
//! `cloneFileOffset` = where the chunk starts, proto/chunk.proto); a chunk server that lacks the
//! chunk reads the source's bytes itself (its own Curve client) for a read, or creates the
//! chunk as a clone of the source before a partial write, so unwritten parts keep reading the
//! source. libcurve does the same (its splitter's request source info). Without the fields a
//! client reads zeros where the source has data, as this client did before.
//!
//! Reads of a cloned range must also reach the chunk servers when the clone's segment is not
//! allocated yet, so such reads ask the MDS to allocate it (GetOrAllocateSegment) instead of
//! answering zeros.

use super::proto::mds as pb;

/// The source of a lazily cloned volume (`kFileCloneMetaInstalled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSource {
    /// The source volume's path.
    pub name: String,
    /// Bytes of the clone that come from the source.
    pub length: u64,
}

impl CloneSource {
    /// The clone source of a file, when it is a lazy clone whose data is not yet all copied.
    pub fn of(info: &pb::FileInfo) -> Option<CloneSource> {
        let installed = info.file_status == Some(pb::FileStatus::KFileCloneMetaInstalled as i32);
        match (&info.clone_source, installed) {
            (Some(name), true) if !name.is_empty() => Some(CloneSource {
                name: name.clone(),
                length: info.clone_length.unwrap_or(0),
            }),
            _ => None,
        }
    }

    /// `(cloneFileSource, cloneFileOffset)` for I/O in the chunk starting at `chunk_start`,
    /// or `None` past the cloned length.
    pub fn for_chunk(&self, chunk_start: u64) -> Option<(String, u64)> {
        (chunk_start < self.length).then(|| (self.name.clone(), chunk_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_clones_with_a_source_have_one() {
        let mut i = pb::FileInfo {
            clone_source: Some("/src".into()),
            clone_length: Some(10 << 30),
            file_status: Some(pb::FileStatus::KFileCloning as i32),
            ..Default::default()
        };
        assert_eq!(CloneSource::of(&i), None, "still cloning: not readable");
        i.file_status = Some(pb::FileStatus::KFileCloneMetaInstalled as i32);
        let c = CloneSource::of(&i).unwrap();
        assert_eq!(c.for_chunk(16 << 20), Some(("/src".to_string(), 16 << 20)));
        assert_eq!(c.for_chunk(10 << 30), None, "past the source");
        i.file_status = Some(pb::FileStatus::KFileCloned as i32);
        assert_eq!(CloneSource::of(&i), None, "fully copied: no source needed");
        i.file_status = Some(pb::FileStatus::KFileCreated as i32);
        i.clone_source = None;
        assert_eq!(CloneSource::of(&i), None);
    }
}
