//! Lazy clones on the real cluster (issue 9): a volume made by MDS CreateCloneFile from another
//! volume and set to CloneMetaInstalled reads the source's data through our client before any
//! of it is copied, and our writes to it land beside the source's bytes (src/curve/clone_source.rs).
//!
//! The cluster kit has no snapshot-clone server, but its MDS creates clone files and its chunk
//! servers read a clone's source with their own Curve client, which is all a lazy clone of a
//! volume needs; the test makes the clone with our own MDS calls, as that server would.

use curve_tgt::curve::auth::Credentials;
use curve_tgt::curve::blocking::BlockingClient;
use curve_tgt::curve::config::ClientConfig;
use curve_tgt::curve::mds::{AdminReply, AdminRequest};
use curve_tgt::curve::pattern;
use curve_tgt::curve::proto::mds::FileStatus;

use crate::common::curve::{Cluster, OWNER};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CHUNK: u64 = 16 * MIB;

fn pat(off: u64, len: u64, seed: u32) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    pattern::fill(&mut v, off, seed);
    v
}

#[test]
fn a_lazy_clone_reads_its_source_and_keeps_our_writes() {
    let Some(c) = Cluster::start("curve_clone") else {
        return;
    };
    let (ok, out) = c.sh(&["vol", "create", "/src", OWNER, "10"]);
    assert!(ok, "vol create: {out}");
    // The source's data, written by Curve's own client: in chunk 0, across a chunk edge and
    // across a segment edge.
    let theirs = [
        (0, MIB, 61u32),
        (CHUNK - 64 * 1024, 128 * 1024, 62),
        (GIB - 64 * 1024, 128 * 1024, 63),
    ];
    for (off, len, seed) in theirs {
        let (ok, out) = c.smoke("write", "/src", off, len, seed);
        assert!(ok, "libcurve write at {off}: {out}");
    }
    let cfg = ClientConfig {
        mds_addrs: vec![c.mds.parse().unwrap()],
        ..ClientConfig::default()
    };
    let mut admin = BlockingClient::new(cfg.clone(), Credentials::user(OWNER));
    let src = match admin.admin(AdminRequest::Stat {
        path: "/src".into(),
    }) {
        Ok(AdminReply::Info(i)) => i,
        other => panic!("stat /src: {other:?}"),
    };
    let made = admin.admin(AdminRequest::CreateClone {
        path: "/dst".into(),
        source: "/src".into(),
        length: src.length.unwrap(),
        chunk_size: src.chunk_size.unwrap(),
        seq: src.seq_num.unwrap_or(1),
    });
    let Ok(AdminReply::Info(dst)) = made else {
        panic!("CreateCloneFile: {made:?}")
    };
    assert_eq!(dst.file_status, Some(FileStatus::KFileCloning as i32));
    assert_eq!(dst.clone_source.as_deref(), Some("/src"));
    let r = admin.admin(AdminRequest::SetCloneStatus {
        path: "/dst".into(),
        status: FileStatus::KFileCloneMetaInstalled as i32,
    });
    assert!(
        matches!(r, Ok(AdminReply::Done)),
        "SetCloneFileStatus: {r:?}"
    );

    // Our client reads the source's bytes through the clone, nothing having been copied.
    let mut ours = BlockingClient::new(cfg, Credentials::user(OWNER));
    ours.open("/dst").expect("open the clone");
    for (off, len, seed) in theirs {
        let got = ours.read(off, len as usize).expect("read the clone");
        assert_eq!(
            pattern::first_mismatch(&got, off, seed),
            None,
            "clone at {off} does not read its source"
        );
    }
    assert!(
        ours.read(5 * GIB, 64 * 1024)
            .unwrap()
            .iter()
            .all(|b| *b == 0),
        "where the source has nothing the clone reads zeros"
    );

    // A partial write to a chunk not yet copied: the chunk server makes it a clone chunk, so
    // the rest of the chunk still reads the source.
    let (w_off, w_len) = (3 * 4096, 8192);
    ours.write(w_off, pat(w_off, w_len, 71).into())
        .expect("write to the clone");
    let got = ours.read(0, MIB as usize).unwrap();
    let mut want = pat(0, MIB, 61);
    want[w_off as usize..(w_off + w_len) as usize].copy_from_slice(&pat(w_off, w_len, 71));
    assert!(got == want, "chunk 0 of the clone after our partial write");
    // Writing into the next chunk's range, at the chunk edge.
    let e_off = CHUNK - 4096;
    ours.write(e_off, pat(e_off, 8192, 72).into()).unwrap();
    let got = ours.read(CHUNK - 64 * 1024, 128 * 1024).unwrap();
    let mut want = pat(CHUNK - 64 * 1024, 128 * 1024, 62);
    let at = (e_off - (CHUNK - 64 * 1024)) as usize;
    want[at..at + 8192].copy_from_slice(&pat(e_off, 8192, 72));
    assert!(got == want, "the chunk edge of the clone after our write");
    ours.close().unwrap();

    // Curve's own client agrees, and the source is untouched.
    for (path, off, len, seed) in [
        ("/dst", w_off, w_len, 71),
        ("/dst", GIB - 64 * 1024, 128 * 1024, 63),
        ("/src", 0, MIB, 61),
        ("/src", CHUNK - 64 * 1024, 128 * 1024, 62),
    ] {
        let (ok, out) = c.smoke("verify", path, off, len, seed);
        assert!(ok, "libcurve verify {path} at {off}: {out}");
    }
}
