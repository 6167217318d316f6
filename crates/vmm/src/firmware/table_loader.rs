//! The ACPI tables handed to a BIOS through fw_cfg, with the commands
//! that place them: QEMU's "table loader" protocol, which SeaBIOS and
//! OVMF run (`etc/table-loader`).
//!
//! A BIOS owns the memory where tables go, so the VMM cannot write them
//! at fixed addresses as it does for a direct Linux boot. Instead it
//! builds them as two files, `etc/acpi/rsdp` (the RSDP, which must be in
//! the BIOS area 0xE0000-0xFFFFF to be found by a scan) and
//! `etc/acpi/tables` (XSDT, FADT, FACS, MADT, DSDT, MCFG), with every
//! pointer field holding an offset into the tables file, and a list of
//! 128-byte commands (all integers little-endian):
//!
//! | command | fields | the BIOS |
//! |---|---|---|
//! | 1 ALLOCATE | file (56 bytes), alignment (u32), zone (u8: 1 high memory, 2 F-segment) | copies the file into memory it allocates |
//! | 2 ADD_POINTER | destination file, source file, offset (u32), size (u8) | adds the source file's address to the `size`-byte value at `offset` in the destination |
//! | 3 ADD_CHECKSUM | file, offset (u32), start (u32), length (u32) | sets the byte at `offset` so that `length` bytes from `start` sum to zero |
//!
//! The BIOS then finds the RSDP in its BIOS area, as an OS will.

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use super::acpi::{build_facs, build_fadt, build_madt, build_mcfg, SDT_HEADER_LEN};
use super::{dsdt, FirmwareError, Platform, ACPI_OEM_ID, ACPI_OEM_REVISION, ACPI_OEM_TABLE_ID};

/// The fw_cfg name of the RSDP file.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
/// The fw_cfg name of the tables file.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// The fw_cfg name of the command list.
pub const LOADER_FILE: &str = "etc/table-loader";

/// Bytes of one loader command.
const COMMAND_BYTES: usize = 128;
/// Bytes of a file name field.
const NAME_BYTES: usize = 56;

const ALLOCATE: u32 = 1;
const ADD_POINTER: u32 = 2;
const ADD_CHECKSUM: u32 = 3;
/// ALLOCATE zones.
const ZONE_HIGH: u8 = 1;
const ZONE_FSEG: u8 = 2;

/// Byte offset of the checksum in an ACPI table header (ACPI 6.5 §5.2.6).
const SDT_CHECKSUM: u32 = 9;
/// FADT fields holding addresses (ACPI 6.5 Table 5.9): FIRMWARE_CTRL and
/// DSDT (4 bytes), X_FIRMWARE_CTRL and X_DSDT (8 bytes).
const FADT_POINTERS: [(u32, u8); 4] = [(36, 4), (40, 4), (132, 8), (140, 8)];
/// RSDP fields (ACPI 6.5 §5.2.5.3): the checksum of the first 20 bytes,
/// the XSDT address, the extended checksum of all 36.
const RSDP_CHECKSUM: u32 = 8;
const RSDP_XSDT: u32 = 24;
const RSDP_EXTENDED_CHECKSUM: u32 = 32;
const RSDP_V1_BYTES: u32 = 20;

/// The three fw_cfg files.
#[derive(Debug, Clone)]
pub struct LoaderFiles {
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// `etc/table-loader`.
    pub loader: Vec<u8>,
}

/// Builds the tables that describe `platform` and the commands that
/// place them.
pub fn build(platform: &Platform) -> Result<LoaderFiles, FirmwareError> {
    platform.validate()?;
    let mut tables = Vec::new();
    // Appends `bytes` at an `align`-aligned offset; returns the offset.
    let mut put = |bytes: &[u8], align: usize| -> u32 {
        let at = tables.len().next_multiple_of(align);
        tables.resize(at, 0);
        tables.extend_from_slice(bytes);
        at as u32
    };
    let facs = put(&build_facs(), 64);
    let dsdt = put(&dsdt::build_dsdt(platform), 8);
    let fadt = put(&build_fadt(dsdt, facs), 8);
    let madt = put(&build_madt(platform)?, 8);
    let mcfg = put(&build_mcfg(), 8);
    let mut xsdt_table = XSDT::new(ACPI_OEM_ID, ACPI_OEM_TABLE_ID, ACPI_OEM_REVISION);
    for t in [fadt, madt, mcfg] {
        xsdt_table.add_entry(u64::from(t));
    }
    let mut xsdt_bytes = Vec::new();
    xsdt_table.to_aml_bytes(&mut xsdt_bytes);
    let xsdt = put(&xsdt_bytes, 8);
    let mut rsdp = Vec::new();
    Rsdp::new(ACPI_OEM_ID, u64::from(xsdt)).to_aml_bytes(&mut rsdp);

    let length_at = |at: u32| -> u32 {
        let i = at as usize + 4;
        u32::from_le_bytes([tables[i], tables[i + 1], tables[i + 2], tables[i + 3]])
    };
    let mut loader = Vec::new();
    allocate(&mut loader, RSDP_FILE, 16, ZONE_FSEG);
    allocate(&mut loader, TABLES_FILE, 64, ZONE_HIGH);
    for (offset, size) in FADT_POINTERS {
        add_pointer(&mut loader, TABLES_FILE, TABLES_FILE, fadt + offset, size);
    }
    let entries = (xsdt_bytes.len() - SDT_HEADER_LEN) / 8;
    for i in 0..entries as u32 {
        add_pointer(
            &mut loader,
            TABLES_FILE,
            TABLES_FILE,
            xsdt + SDT_HEADER_LEN as u32 + 8 * i,
            8,
        );
    }
    for table in [dsdt, fadt, madt, mcfg, xsdt] {
        add_checksum(
            &mut loader,
            TABLES_FILE,
            table + SDT_CHECKSUM,
            table,
            length_at(table),
        );
    }
    add_pointer(&mut loader, RSDP_FILE, TABLES_FILE, RSDP_XSDT, 8);
    add_checksum(&mut loader, RSDP_FILE, RSDP_CHECKSUM, 0, RSDP_V1_BYTES);
    add_checksum(
        &mut loader,
        RSDP_FILE,
        RSDP_EXTENDED_CHECKSUM,
        0,
        rsdp.len() as u32,
    );
    Ok(LoaderFiles {
        rsdp,
        tables,
        loader,
    })
}

/// A command's file-name field.
fn name_field(name: &str) -> [u8; NAME_BYTES] {
    let mut field = [0u8; NAME_BYTES];
    let n = name.len().min(NAME_BYTES - 1);
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    field
}

fn command(out: &mut Vec<u8>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(body);
    out.resize(start + COMMAND_BYTES, 0);
}

fn allocate(out: &mut Vec<u8>, file: &str, align: u32, zone: u8) {
    let mut b = ALLOCATE.to_le_bytes().to_vec();
    b.extend_from_slice(&name_field(file));
    b.extend_from_slice(&align.to_le_bytes());
    b.push(zone);
    command(out, &b);
}

fn add_pointer(out: &mut Vec<u8>, dest: &str, src: &str, offset: u32, size: u8) {
    let mut b = ADD_POINTER.to_le_bytes().to_vec();
    b.extend_from_slice(&name_field(dest));
    b.extend_from_slice(&name_field(src));
    b.extend_from_slice(&offset.to_le_bytes());
    b.push(size);
    command(out, &b);
}

fn add_checksum(out: &mut Vec<u8>, file: &str, offset: u32, start: u32, length: u32) {
    let mut b = ADD_CHECKSUM.to_le_bytes().to_vec();
    b.extend_from_slice(&name_field(file));
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    command(out, &b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the commands as a BIOS would, placing the RSDP at `rsdp_at`
    /// and the tables at `tables_at` in a flat memory image.
    fn run_loader(files: &LoaderFiles, rsdp_at: usize, tables_at: usize) -> Vec<u8> {
        let mut mem = vec![0u8; 1 << 20];
        let base = |f: &str| if f == RSDP_FILE { rsdp_at } else { tables_at };
        let name = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        for c in files.loader.chunks(COMMAND_BYTES) {
            match u32_at(c, 0) {
                ALLOCATE => {
                    let f = name(&c[4..60]);
                    let data = if f == RSDP_FILE {
                        &files.rsdp
                    } else {
                        &files.tables
                    };
                    mem[base(&f)..base(&f) + data.len()].copy_from_slice(data);
                }
                ADD_POINTER => {
                    let (dest, src) = (name(&c[4..60]), name(&c[60..116]));
                    let (offset, size) = (u32_at(c, 116) as usize, c[120] as usize);
                    let at = base(&dest) + offset;
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(&mem[at..at + size]);
                    let value = u64::from_le_bytes(v) + base(&src) as u64;
                    mem[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
                }
                ADD_CHECKSUM => {
                    let f = base(&name(&c[4..60]));
                    let (offset, start, len) = (
                        u32_at(c, 60) as usize,
                        u32_at(c, 64) as usize,
                        u32_at(c, 68) as usize,
                    );
                    let sum = mem[f + start..f + start + len]
                        .iter()
                        .fold(0u8, |s, b| s.wrapping_add(*b));
                    mem[f + offset] = mem[f + offset].wrapping_sub(sum);
                }
                other => panic!("unknown command {other}"),
            }
        }
        mem
    }

    #[test]
    fn the_loaded_tables_point_at_each_other_and_check_out() {
        let files = build(&Platform::new(2)).unwrap();
        assert_eq!(files.loader.len() % COMMAND_BYTES, 0);
        let (rsdp_at, tables_at) = (0xf_5a00, 0x4_0000);
        let mem = run_loader(&files, rsdp_at, tables_at);
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        let rsdp = &mem[rsdp_at..rsdp_at + 36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap()) as usize;
        assert_eq!(&mem[xsdt..xsdt + 4], b"XSDT");
        let table = |at: usize| {
            let len = u32::from_le_bytes(mem[at + 4..at + 8].try_into().unwrap()) as usize;
            &mem[at..at + len]
        };
        assert_eq!(sum(table(xsdt)), 0);
        let entries = table(xsdt)[36..]
            .chunks(8)
            .map(|e| u64::from_le_bytes(e.try_into().unwrap()) as usize)
            .collect::<Vec<_>>();
        let sigs: Vec<&[u8]> = entries.iter().map(|&e| &mem[e..e + 4]).collect();
        assert_eq!(sigs, [&b"FACP"[..], b"APIC", b"MCFG"]);
        for &e in &entries {
            assert_eq!(sum(table(e)), 0);
        }
        let fadt = table(entries[0]);
        let dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap()) as usize;
        assert_eq!(&mem[dsdt..dsdt + 4], b"DSDT");
        assert_eq!(sum(table(dsdt)), 0);
        let facs = u32::from_le_bytes(fadt[36..40].try_into().unwrap()) as usize;
        assert_eq!(&mem[facs..facs + 4], b"FACS");
        assert_eq!(facs % 64, 0);
    }
}
