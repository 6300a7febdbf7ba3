//! tgtadm CLI (in progress).
