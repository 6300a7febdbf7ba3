//! Mode parameters (SPC-4 §7.5): the LU's mode pages with their current, default and
//! changeable values, and MODE SENSE / MODE SELECT over them.

use super::error::CmdError;
use super::lu::LogicalUnit;
use super::{Effect, NexusId, UaScope, UnitAttention};

/// One mode page (or subpage) with the three value sets MODE SENSE's PC field selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModePage {
    pub page: u8,
    pub subpage: u8,
    /// Current values (page bytes after the page header).
    pub current: Vec<u8>,
    /// Default values (tgt's initial contents).
    pub default: Vec<u8>,
    /// Changeable bits: MODE SELECT may flip only these.
    pub mask: Vec<u8>,
}

impl ModePage {
    fn new(page: u8, subpage: u8, data: &[u8], mask: &[u8]) -> ModePage {
        let mut m = vec![0u8; data.len()];
        m[..mask.len()].copy_from_slice(mask);
        ModePage {
            page,
            subpage,
            current: data.to_vec(),
            default: data.to_vec(),
            mask: m,
        }
    }

    /// The page as MODE SENSE returns it, with the header of its format (SPC-4 §7.5.7).
    fn encode(&self, values: &[u8], out: &mut Vec<u8>) {
        if self.subpage == 0 {
            out.push(self.page);
            out.push(values.len() as u8);
        } else {
            out.push(self.page | 0x40);
            out.push(self.subpage);
            out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(values);
    }
}

/// Caching page (08h) byte holding WCE.
const CACHING_WCE: (usize, u8) = (0, 0x04);
/// Control page (0Ah) byte holding SWP.
const CONTROL_SWP: (usize, u8) = (2, 0x08);

/// The mode pages of one LU, in the order MODE SENSE lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModePages {
    pages: Vec<ModePage>,
}

impl ModePages {
    /// tgt's disk pages (`usr/sbc.c::sbc_lu_init`): disconnect-reconnect, caching (WCE
    /// changeable), control (SWP changeable), control extension, informational exceptions.
    pub fn disk() -> ModePages {
        let caching = [
            0x14, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80, 0x14, 0, 0, 0, 0, 0, 0,
        ];
        let control = [2, 0x10, 0, 0, 0, 0, 0, 0, 2, 0];
        let mut control_ext = [0u8; 0x1c];
        control_ext[0] = 0x04;
        ModePages {
            pages: vec![
                ModePage::new(
                    0x02,
                    0,
                    &[0x80, 0x80, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    &[],
                ),
                ModePage::new(0x08, 0, &caching, &[CACHING_WCE.1]),
                ModePage::new(0x0a, 0, &control, &[0, 0, CONTROL_SWP.1]),
                ModePage::new(0x0a, 1, &control_ext, &[]),
                ModePage::new(0x1c, 0, &[8, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            ],
        }
    }

    fn find(&self, page: u8, subpage: u8) -> Option<&ModePage> {
        self.pages
            .iter()
            .find(|p| p.page == page && p.subpage == subpage)
    }

    /// Whether tgtadm `mode_page=` may set this page (any page code but 3Fh, any subpage).
    pub fn settable(&self, page: u8, _subpage: u8) -> bool {
        page < 0x3f
    }

    /// tgtadm `mode_page=`: replaces a page's current and default values (keeping its
    /// changeable mask when the length is unchanged), or adds the page.
    pub fn set(&mut self, page: u8, subpage: u8, data: Vec<u8>) {
        match self
            .pages
            .iter_mut()
            .find(|p| p.page == page && p.subpage == subpage)
        {
            Some(p) => {
                if p.mask.len() != data.len() {
                    p.mask = vec![0; data.len()];
                }
                p.current = data.clone();
                p.default = data;
            }
            None => self.pages.push(ModePage::new(page, subpage, &data, &[])),
        }
    }

    fn bit(&self, page: u8, (at, bit): (usize, u8)) -> bool {
        self.find(page, 0)
            .and_then(|p| p.current.get(at))
            .is_some_and(|b| b & bit != 0)
    }

    /// Control page SWP (software write protect).
    pub fn swp(&self) -> bool {
        self.bit(0x0a, CONTROL_SWP)
    }

    /// Caching page WCE (write cache enabled).
    pub fn wce(&self) -> bool {
        self.bit(0x08, CACHING_WCE)
    }
}

/// MODE SENSE(6)/(10) CDB fields.
#[derive(Copy, Clone, Debug)]
pub struct SenseArgs {
    pub ten: bool,
    pub dbd: bool,
    pub llbaa: bool,
    pub pc: u8,
    pub page: u8,
    pub subpage: u8,
}

/// MODE SENSE (SPC-4 §6.11, §6.12): header, block descriptor, then the requested pages.
pub fn mode_sense(lu: &LogicalUnit, a: SenseArgs) -> Result<Vec<u8>, CmdError> {
    if a.pc == 3 {
        return Err(CmdError::SavingParamsUnsupported);
    }
    let st = lu.lock();
    let mut pages = Vec::new();
    let wanted = |p: &ModePage| match (a.page, a.subpage) {
        (0x3f, 0x00) => p.subpage == 0,
        (0x3f, 0xff) => true,
        (pg, 0xff) => p.page == pg,
        (pg, sp) => p.page == pg && p.subpage == sp,
    };
    let mut found = false;
    for p in st.mode.pages.iter().filter(|p| wanted(p)) {
        found = true;
        let values = match a.pc {
            0 => &p.current,
            1 => &p.mask,
            _ => &p.default,
        };
        p.encode(values, &mut pages);
    }
    if !found {
        return Err(CmdError::InvalidFieldInCdb);
    }
    drop(st);

    let is_disk = lu.dev_type() == super::DeviceType::Disk;
    let mut bd = Vec::new();
    if !a.dbd && is_disk {
        let blocks = lu.nr_blocks();
        if a.ten && a.llbaa {
            bd.extend_from_slice(&blocks.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&lu.block_size().to_be_bytes());
        } else {
            let b32 = u32::try_from(blocks).unwrap_or(u32::MAX);
            bd.extend_from_slice(&b32.to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&lu.block_size().to_be_bytes()[1..]);
        }
    }
    // Device-specific parameter for direct-access devices (SBC-3 §6.4.1): WP, DPOFUA.
    let dsp = if is_disk {
        (if lu.write_protected() { 0x80 } else { 0 }) | 0x10
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + bd.len() + pages.len());
    if a.ten {
        let len = (6 + bd.len() + pages.len()) as u16;
        out.extend_from_slice(&len.to_be_bytes());
        out.push(0);
        out.push(dsp);
        out.push(u8::from(a.llbaa && bd.len() == 16));
        out.push(0);
        out.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    } else {
        let len = 3 + bd.len() + pages.len();
        out.push(u8::try_from(len).map_err(|_| CmdError::InvalidFieldInCdb)?);
        out.push(0);
        out.push(dsp);
        out.push(bd.len() as u8);
    }
    out.extend_from_slice(&bd);
    out.extend_from_slice(&pages);
    Ok(out)
}

/// MODE SELECT (SPC-4 §6.9, §6.10): validates the whole parameter list against the changeable
/// masks before changing anything; a change raises MODE PARAMETERS CHANGED on the other
/// nexuses (SPC-4 §6.9: "other I_T nexuses").
pub fn mode_select(
    lu: &LogicalUnit,
    me: &NexusId,
    ten: bool,
    sp: bool,
    param_len: u32,
    data_out: &[u8],
) -> Result<Vec<Effect>, CmdError> {
    if sp {
        // Nothing survives power loss here.
        return Err(CmdError::InvalidFieldInCdb);
    }
    let len = param_len as usize;
    if len == 0 {
        return Ok(Vec::new());
    }
    if data_out.len() < len {
        return Err(CmdError::ParamListLength);
    }
    let d = &data_out[..len];
    let hdr = if ten { 8 } else { 4 };
    if d.len() < hdr {
        return Err(CmdError::ParamListLength);
    }
    let bd_len = if ten {
        usize::from(u16::from_be_bytes([d[6], d[7]]))
    } else {
        usize::from(d[3])
    };
    let long = ten && d[4] & 1 != 0;
    let mut off = hdr;
    match (bd_len, long) {
        (0, _) => {}
        (8, false) | (16, true) => {
            let bd = d.get(off..off + bd_len).ok_or(CmdError::ParamListLength)?;
            let bl = &bd[bd_len - 3..];
            let block_len = u32::from_be_bytes([0, bl[0], bl[1], bl[2]]);
            // Changing the block size through MODE SELECT is not supported; 0 means "keep".
            if block_len != 0 && block_len != lu.block_size() {
                return Err(CmdError::InvalidFieldInParamList);
            }
            off += bd_len;
        }
        _ => return Err(CmdError::InvalidFieldInParamList),
    }

    let mut st = lu.lock();
    let mut staged = st.mode.clone();
    let mut changed = false;
    while off < d.len() {
        let b0 = d[off];
        if b0 & 0x80 != 0 {
            // PS is reserved in MODE SELECT parameter data.
            return Err(CmdError::InvalidFieldInParamList);
        }
        let spf = b0 & 0x40 != 0;
        let (page, subpage, plen, phdr) = if spf {
            let h = d.get(off..off + 4).ok_or(CmdError::ParamListLength)?;
            (
                b0 & 0x3f,
                h[1],
                usize::from(u16::from_be_bytes([h[2], h[3]])),
                4,
            )
        } else {
            let h = d.get(off..off + 2).ok_or(CmdError::ParamListLength)?;
            (b0 & 0x3f, 0, usize::from(h[1]), 2)
        };
        let body = d
            .get(off + phdr..off + phdr + plen)
            .ok_or(CmdError::ParamListLength)?;
        let pg = staged
            .pages
            .iter_mut()
            .find(|p| p.page == page && p.subpage == subpage)
            .ok_or(CmdError::InvalidFieldInParamList)?;
        if plen != pg.current.len() {
            return Err(CmdError::InvalidFieldInParamList);
        }
        let forbidden = body
            .iter()
            .zip(&pg.current)
            .zip(&pg.mask)
            .any(|((new, cur), mask)| (new ^ cur) & !mask != 0);
        if forbidden {
            return Err(CmdError::InvalidFieldInParamList);
        }
        if pg.current != body {
            pg.current.copy_from_slice(body);
            changed = true;
        }
        off += phdr + plen;
    }
    if !changed {
        return Ok(Vec::new());
    }
    st.mode = staged;
    lu.set_swp(st.mode.swp());
    Ok(vec![Effect::Ua {
        scope: UaScope::OthersOf(me.clone()),
        lun: Some(lu.lun()),
        ua: UnitAttention::ModeParametersChanged,
    }])
}
