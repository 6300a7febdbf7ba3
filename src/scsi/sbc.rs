//! Block commands (SBC-3 §5): READ, WRITE, WRITE AND VERIFY, VERIFY, COMPARE AND WRITE,
//! WRITE SAME, UNMAP, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY, GET LBA STATUS, FORMAT UNIT.
//! Each validates the CDB against the LU and returns the backing-store operation to run.

use super::cdb::{BlockRange, WriteSame};
use super::error::CmdError;
use super::inquiry::{MAX_CAW_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_UNMAP_LBA_COUNT, MAX_XFER_BYTES};
use super::lu::LogicalUnit;
use super::Step;
use crate::backing::BlockIo;

/// NOT READY when the medium is absent (offline LU, ejected medium; SBC-3 §4.16).
pub fn require_medium(lu: &LogicalUnit) -> Result<(), CmdError> {
    if lu.online() && lu.backing().is_some() {
        Ok(())
    } else {
        Err(CmdError::MediumNotPresent)
    }
}

fn require_writable(lu: &LogicalUnit) -> Result<(), CmdError> {
    if lu.write_protected() {
        Err(CmdError::WriteProtected)
    } else {
        Ok(())
    }
}

/// LBA OUT OF RANGE unless `lba + blocks` stays within the capacity (SBC-3 §4.5).
fn check_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> Result<(), CmdError> {
    match lba.checked_add(blocks) {
        Some(end) if end <= lu.nr_blocks() => Ok(()),
        _ => Err(CmdError::LbaOutOfRange),
    }
}

/// [`check_range`] for commands whose zero length means "no blocks" (READ, WRITE, VERIFY,
/// PRE-FETCH): the LBA itself must still name a block of the medium. SBC-3 §4.5 refuses a
/// command that "references ... a logical block not within the capacity of the medium", and
/// the LBA one past the last is not (libiscsi's *.ZeroBlocks send LBA == capacity when the
/// capacity is 2^31 blocks, as on a null LU).
fn check_lba_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> Result<(), CmdError> {
    if blocks == 0 && lba >= lu.nr_blocks() {
        return Err(CmdError::LbaOutOfRange);
    }
    check_range(lu, lba, blocks)
}

/// Byte length of `blocks` blocks, bounded by the advertised MAXIMUM TRANSFER LENGTH.
fn xfer_bytes(lu: &LogicalUnit, blocks: u32) -> Result<u32, CmdError> {
    let bytes = u64::from(blocks) << lu.blk_shift();
    if bytes > MAX_XFER_BYTES {
        return Err(CmdError::InvalidFieldInCdb);
    }
    u32::try_from(bytes).map_err(|_| CmdError::InvalidFieldInCdb)
}

fn offset(lu: &LogicalUnit, lba: u64) -> u64 {
    lba << lu.blk_shift()
}

/// Common READ/WRITE/VERIFY checks: protection field, medium, LBA range, then write protect.
///
/// SBC-3 §4.11 (write protection) and §4.5 (LBA range) do not rank the two conditions, and
/// SAM-5 leaves the order in which a device server detects errors to it. The range comes
/// first here: a command naming blocks the medium does not have is malformed whatever the
/// medium's state, and libiscsi's Write*/WriteVerify*/OrWrite.BeyondEol expect LBA OUT OF
/// RANGE from a write-protected LU too. A write that is in range (a zero-length one included)
/// still gets DATA PROTECT.
fn check_rw(lu: &LogicalUnit, r: &BlockRange, writes: bool) -> Result<(), CmdError> {
    if r.protect != 0 {
        // No protection information: RDPROTECT/WRPROTECT/VRPROTECT must be 0 (SBC-3 §5.8).
        return Err(CmdError::InvalidFieldInCdb);
    }
    require_medium(lu)?;
    check_lba_range(lu, r.lba, u64::from(r.blocks))?;
    if writes {
        require_writable(lu)?;
    }
    Ok(())
}

/// READ(6/10/12/16).
pub fn read(lu: &LogicalUnit, r: &BlockRange) -> Result<Step, CmdError> {
    check_rw(lu, r, false)?;
    if r.blocks == 0 {
        return Ok(Step::Good);
    }
    Ok(Step::Io(BlockIo::Read {
        offset: offset(lu, r.lba),
        len: xfer_bytes(lu, r.blocks)?,
    }))
}

/// The Data-Out range a command that must get all of its data uses: the first `bytes` bytes.
/// Less Data-Out than the CDB asks for is refused without touching the medium (FCP-4 §9.4.2
/// option b: INVALID FIELD IN COMMAND INFORMATION UNIT).
fn data_range(data_out: &[u8], bytes: usize) -> Result<std::ops::Range<usize>, CmdError> {
    if data_out.len() < bytes {
        return Err(CmdError::InvalidFieldInIu);
    }
    Ok(0..bytes)
}

/// How many bytes of a WRITE to store when the initiator's Expected Data Transfer Length
/// (`data_out` is exactly what it sent, at most the EDTL) differs from the CDB's transfer
/// length of `bytes`. RFC 7143 §11.4.5.2 leaves the outcome to SCSI: the target reports the
/// residual, and FCP-4 §9.4.2 option a "processes the command normally except that data
/// beyond [the EDTL] shall not be requested or transferred" — so whole blocks that arrived
/// are written and the rest of the range is left alone (libiscsi's Write*Residuals expect
/// GOOD here). A Data-Out that ends inside a block cannot be written without inventing data,
/// so it takes option b (INVALID FIELD IN COMMAND INFORMATION UNIT, nothing written).
/// Extra Data-Out beyond the transfer length (EDTL > SPDTL) is ignored.
fn write_len(data_out: &[u8], bytes: u32, block_size: u32) -> Result<u32, CmdError> {
    let got = u32::try_from(data_out.len()).unwrap_or(u32::MAX).min(bytes);
    if got < bytes && got % block_size != 0 {
        return Err(CmdError::InvalidFieldInIu);
    }
    Ok(got)
}

/// WRITE(6/10/12/16) and WRITE AND VERIFY (the verify step is the write completing: the data
/// written is the data given).
pub fn write(lu: &LogicalUnit, r: &BlockRange, data_out: &[u8]) -> Result<Step, CmdError> {
    check_rw(lu, r, true)?;
    if r.blocks == 0 {
        return Ok(Step::Good);
    }
    let bytes = xfer_bytes(lu, r.blocks)?;
    let len = write_len(data_out, bytes, lu.block_size())?;
    if len == 0 {
        return Ok(Step::Good);
    }
    Ok(Step::Io(BlockIo::Write {
        offset: offset(lu, r.lba),
        data: 0..len as usize,
        fua: r.fua,
    }))
}

/// VERIFY(10/12/16) (SBC-3 §5.33): BYTCHK 0 checks the medium, 1 compares with Data-Out.
pub fn verify(lu: &LogicalUnit, r: &BlockRange, data_out: &[u8]) -> Result<Step, CmdError> {
    if r.bytchk > 1 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    check_rw(lu, r, false)?;
    if r.blocks == 0 {
        return Ok(Step::Good);
    }
    let bytes = xfer_bytes(lu, r.blocks)?;
    let compare = if r.bytchk == 1 {
        Some(data_range(data_out, bytes as usize)?)
    } else {
        None
    };
    Ok(Step::Io(BlockIo::Verify {
        offset: offset(lu, r.lba),
        len: bytes,
        compare,
    }))
}

/// COMPARE AND WRITE (SBC-3 §5.2): Data-Out holds the verify blocks then the write blocks.
pub fn compare_and_write(
    lu: &LogicalUnit,
    r: &BlockRange,
    data_out: &[u8],
) -> Result<Step, CmdError> {
    if r.blocks > MAX_CAW_BLOCKS {
        return Err(CmdError::InvalidFieldInCdb);
    }
    // SBC-3 §5.2: the Data-Out Buffer holds exactly 2 × NUMBER OF LOGICAL BLOCKS blocks (the
    // verify instance, then the write instance). Data-Out of another length (including any
    // Data-Out with NUMBER OF LOGICAL BLOCKS 0) means the CDB's length does not describe the
    // data: the command cannot be performed atomically as asked, so it is refused as an
    // invalid NUMBER OF LOGICAL BLOCKS before anything is compared or written.
    let n = xfer_bytes(lu, r.blocks)?;
    if data_out.len() != 2 * n as usize {
        return Err(CmdError::InvalidFieldInCdb);
    }
    check_rw(lu, r, true)?;
    if r.blocks == 0 {
        return Ok(Step::Good);
    }
    let half = n as usize;
    let both = 0..2 * half;
    Ok(Step::Io(BlockIo::CompareAndWrite {
        offset: offset(lu, r.lba),
        len: n,
        verify: 0..half,
        write: half..both.end,
    }))
}

/// ORWRITE(16) (SBC-3 §5.8): read the blocks, OR each byte with Data-Out, write the result.
/// ORPROTECT must be 0 (no protection information); zero blocks is GOOD after the range
/// check. Unlike WRITE, a short Data-Out cannot be written in part: the OR needs every byte,
/// so less than the transfer length is refused before anything is read (FCP-4 §9.4.2 b).
/// The read and the write run back to back on the shard's ring with the same exclusion as
/// COMPARE AND WRITE (none against other shards' writes to the same blocks).
pub fn orwrite(lu: &LogicalUnit, r: &BlockRange, data_out: &[u8]) -> Result<Step, CmdError> {
    check_rw(lu, r, true)?;
    if r.blocks == 0 {
        return Ok(Step::Good);
    }
    let bytes = xfer_bytes(lu, r.blocks)?;
    let data = data_range(data_out, bytes as usize)?;
    Ok(Step::Io(BlockIo::OrWrite {
        offset: offset(lu, r.lba),
        len: bytes,
        data,
        fua: r.fua,
    }))
}

/// WRITE SAME(10/16) (SBC-3 §5.42), with tgt's checks: ANCHOR unsupported, UNMAP only with
/// provisioning, LBDATA/PBDATA (obsolete) refused, exactly one block of Data-Out, NUMBER OF
/// LOGICAL BLOCKS 0 meaning "to the last block".
pub fn write_same(lu: &LogicalUnit, w: &WriteSame, data_out: &[u8]) -> Result<Step, CmdError> {
    if w.wrprotect != 0 || w.anchor || w.lbdata || w.pbdata {
        return Err(CmdError::InvalidFieldInCdb);
    }
    // A write-protected medium refuses every write, deallocating ones included, with DATA
    // PROTECT before the UNMAP/NDOB provisioning checks (SBC-3 §4.11; libiscsi's
    // ReadOnly.ReadOnlySBC sends WRITE SAME UNMAP to a read-only, fully provisioned LU).
    require_medium(lu)?;
    require_writable(lu)?;
    if w.unmap && !lu.lbp_enabled() {
        return Err(CmdError::InvalidFieldInCdb);
    }
    // NDOB without UNMAP would need a zero block the shard does not have; with UNMAP it is a
    // deallocation, which reads back zeros only with LBPRZ.
    if w.ndob && !(w.unmap && lu.lbprz()) {
        return Err(CmdError::InvalidFieldInCdb);
    }
    let nr = lu.nr_blocks();
    if w.lba >= nr && !(w.lba == nr && w.blocks == 0) {
        return Err(CmdError::LbaOutOfRange);
    }
    // A store with a WRITE SAME limit advertises WSNZ: 0 blocks and longer runs are refused
    // (SBC-3 §5.42, §6.6.3).
    let limit = lu.backing().and_then(|b| b.caps().max_write_same_bytes);
    if limit.is_some() && w.blocks == 0 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    let blocks = if w.blocks == 0 {
        nr - w.lba
    } else {
        u64::from(w.blocks)
    };
    check_range(lu, w.lba, blocks)?;
    if limit.is_some_and(|m| blocks << lu.blk_shift() > m) {
        return Err(CmdError::InvalidFieldInCdb);
    }
    if blocks == 0 {
        return Ok(Step::Good);
    }
    let off = offset(lu, w.lba);
    let len = blocks << lu.blk_shift();
    // SBC-3 §5.42/§5.43: UNMAP set asks the device server to unmap the range (§4.7.3.4). With
    // provisioning enabled (checked above) the range is deallocated whatever the Data-Out
    // block holds, as tgt and LIO do; with LBPRZ it then reads back as zeros, which
    // libiscsi's WriteSame10.UnmapUntilEnd checks after an UNMAP of a 0xFF block.
    let bs = lu.block_size() as usize;
    // Without NDOB the Data-Out is exactly one block, even when it is not used (UNMAP).
    if !w.ndob && data_out.len() != bs {
        return Err(CmdError::ParamListLength);
    }
    if w.ndob || w.unmap {
        return Ok(Step::Io(BlockIo::Discard {
            ranges: vec![(off, len)],
        }));
    }
    Ok(Step::Io(BlockIo::WriteSame {
        offset: off,
        len,
        block: 0..bs,
        unmap: w.unmap,
        block_size: lu.block_size(),
    }))
}

/// UNMAP (SBC-3 §5.28): parses the parameter list with every length check, bounded by the
/// VPD B0h limits.
pub fn unmap(lu: &LogicalUnit, anchor: bool, len: u32, data_out: &[u8]) -> Result<Step, CmdError> {
    if !lu.lbp_enabled() {
        return Err(CmdError::InvalidOpcode);
    }
    if anchor {
        return Err(CmdError::InvalidFieldInCdb);
    }
    require_medium(lu)?;
    require_writable(lu)?;
    let len = len as usize;
    if len == 0 {
        return Ok(Step::Good);
    }
    if len < 8 {
        return Err(CmdError::ParamListLength);
    }
    let p = data_out.get(..len).ok_or(CmdError::ParamListLength)?;
    let data_len = usize::from(u16::from_be_bytes([p[0], p[1]]));
    let desc_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if data_len + 2 > len || desc_len + 8 > len {
        return Err(CmdError::ParamListLength);
    }
    // A trailing partial descriptor is ignored (SBC-3 §5.28.2).
    let count = desc_len / 16;
    if count > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(CmdError::InvalidFieldInParamList);
    }
    let mut ranges = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for d in p[8..8 + count * 16].chunks_exact(16) {
        let lba = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
        let blocks = u32::from_be_bytes(d[8..12].try_into().expect("4 bytes"));
        check_range(lu, lba, u64::from(blocks))?;
        total += u64::from(blocks);
        if total > u64::from(MAX_UNMAP_LBA_COUNT) {
            return Err(CmdError::InvalidFieldInParamList);
        }
        if blocks > 0 {
            ranges.push((offset(lu, lba), u64::from(blocks) << lu.blk_shift()));
        }
    }
    if ranges.is_empty() {
        return Ok(Step::Good);
    }
    Ok(Step::Io(BlockIo::Discard { ranges }))
}

/// SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22): the range is checked, the whole store is flushed.
pub fn sync_cache(lu: &LogicalUnit, r: &BlockRange) -> Result<Step, CmdError> {
    require_medium(lu)?;
    check_range(lu, r.lba, u64::from(r.blocks))?;
    Ok(Step::Io(BlockIo::Flush))
}

/// PRE-FETCH(10/16) (SBC-3 §5.9): nothing to stage; GOOD after the range check.
pub fn pre_fetch(lu: &LogicalUnit, r: &BlockRange) -> Result<Step, CmdError> {
    require_medium(lu)?;
    check_lba_range(lu, r.lba, u64::from(r.blocks))?;
    Ok(Step::Good)
}

/// READ CAPACITY(10) (SBC-3 §5.15): LBA must be 0 without PMI.
pub fn read_capacity10(lu: &LogicalUnit, lba: u32, pmi: bool) -> Result<Vec<u8>, CmdError> {
    if !pmi && lba != 0 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    require_medium(lu)?;
    let last = lu.nr_blocks().saturating_sub(1);
    let mut d = Vec::with_capacity(8);
    d.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
    d.extend_from_slice(&lu.block_size().to_be_bytes());
    Ok(d)
}

/// READ CAPACITY(16) (SBC-3 §5.16): LBPPBE, lowest aligned LBA, LBPME/LBPRZ.
pub fn read_capacity16(lu: &LogicalUnit) -> Result<Vec<u8>, CmdError> {
    require_medium(lu)?;
    let (lbppbe, la_lba) = {
        let st = lu.lock();
        // Automatic: report 4 KiB physical blocks for smaller logical blocks.
        let auto = 12u32.saturating_sub(lu.blk_shift()) as u8;
        (st.lbppbe.unwrap_or(auto), st.la_lba)
    };
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&lu.nr_blocks().saturating_sub(1).to_be_bytes());
    d[8..12].copy_from_slice(&lu.block_size().to_be_bytes());
    d[13] = lbppbe & 0x0f;
    let la = la_lba.to_be_bytes();
    d[14] = la[0] & 0x3f;
    d[15] = la[1];
    if lu.lbp_enabled() {
        d[14] |= 0x80;
        if lu.lbprz() {
            d[14] |= 0x40;
        }
    }
    Ok(d)
}

/// Most LBA status descriptors returned by one GET LBA STATUS.
const MAX_LBA_STATUS_DESCRIPTORS: usize = 64;

/// GET LBA STATUS (SBC-3 §5.6): mapped/deallocated extents from `lba`. A store that tracks
/// allocation is asked for them (an operation on its engine, like any medium access); for one
/// that does not, the whole rest of the LU is one mapped extent.
pub fn get_lba_status(lu: &LogicalUnit, lba: u64, alloc: u32) -> Result<Step, CmdError> {
    require_medium(lu)?;
    let nr = lu.nr_blocks();
    if lba >= nr {
        return Err(CmdError::LbaOutOfRange);
    }
    let store = lu.backing().ok_or(CmdError::MediumNotPresent)?;
    let shift = lu.blk_shift();
    let want = (alloc as usize).saturating_sub(8) / 16;
    let max = want.clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
    if store.caps().lba_status {
        return Ok(Step::Io(BlockIo::LbaStatus {
            offset: lba << shift,
            end: nr << shift,
            block: 1 << shift,
            max: max as u8,
        }));
    }
    let mut extents = Vec::new();
    let mut cur = lba;
    while cur < nr && extents.len() < max {
        let blocks = (nr - cur).min(u64::from(u32::MAX));
        extents.push((true, blocks << shift));
        cur += blocks;
    }
    Ok(Step::Data(lba_status_data(lu, lba, &extents)))
}

/// GET LBA STATUS parameter data for `extents` (mapped, bytes) starting at `lba`.
pub fn lba_status_data(lu: &LogicalUnit, lba: u64, extents: &[(bool, u64)]) -> Vec<u8> {
    let shift = lu.blk_shift();
    let nr = lu.nr_blocks();
    let mut d = vec![0u8; 8];
    let mut cur = lba;
    for &(mapped, len_bytes) in extents.iter().take(MAX_LBA_STATUS_DESCRIPTORS) {
        if cur >= nr {
            break;
        }
        let limit_blocks = (nr - cur).min(u64::from(u32::MAX));
        let blocks = (len_bytes >> shift).clamp(1, limit_blocks);
        d.extend_from_slice(&cur.to_be_bytes());
        d.extend_from_slice(&(blocks as u32).to_be_bytes());
        d.push(if mapped { 0 } else { 1 });
        d.extend_from_slice(&[0; 3]);
        cur += blocks;
    }
    let plen = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&plen.to_be_bytes());
    d
}

/// READ DEFECT DATA(10)/(12) (SBC-3 §5.12, §5.13): a file or device behind the target has no
/// defects this device server manages, so both lists are empty. An empty list is expressible
/// in every defined DEFECT LIST FORMAT, so the requested one is returned as-is (no RECOVERED
/// ERROR / DEFECT LIST NOT FOUND for a substituted format); 111b is reserved. PLISTV / GLISTV
/// say that the requested lists are valid (they are: empty). The (12) header carries a
/// GENERATION CODE (0: the list never changes) and a 4-byte DEFECT LIST LENGTH.
pub fn read_defect_data(
    lu: &LogicalUnit,
    twelve: bool,
    plist: bool,
    glist: bool,
    format: u8,
) -> Result<Vec<u8>, CmdError> {
    if format > 6 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    require_medium(lu)?;
    let flags = u8::from(plist) << 4 | u8::from(glist) << 3 | format;
    Ok(if twelve {
        vec![0, flags, 0, 0, 0, 0, 0, 0]
    } else {
        vec![0, flags, 0, 0]
    })
}

/// FORMAT UNIT (SBC-3 §5.3): there is nothing to format; protection formats and parameter
/// lists are refused.
pub fn format_unit(lu: &LogicalUnit, fmtpinfo: bool, fmtdata: bool) -> Result<Step, CmdError> {
    if fmtpinfo || fmtdata {
        return Err(CmdError::InvalidFieldInCdb);
    }
    require_medium(lu)?;
    require_writable(lu)?;
    Ok(Step::Good)
}
