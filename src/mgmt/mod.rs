//! The management plane: the control thread, tgt's IPC, the configuration model and the text
//! `tgtadm --op show` prints. It never touches the data path; it reaches shards by message.

pub mod snapshot;
