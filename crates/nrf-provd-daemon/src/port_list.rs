//! The serial ports present on this machine, read from sysfs: their USB
//! identity and the stable name the shipped udev rule
//! (`systemd/90-nrf-provd.rules`) gives Nordic and SEGGER ports.
//!
//! `/sys/class/tty/<name>/device` links to the port's device: the USB
//! interface for CDC ACM (`ttyACM*`), a usb-serial port below the interface
//! for `ttyUSB*`, a platform or PNP device for on-board UARTs. The interface
//! is the first directory above it with `bInterfaceNumber`, the USB device
//! the first with `idVendor`. The sysfs root is a parameter so tests can
//! build a tree of their own.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// USB vendor id of Nordic Semiconductor (nRF91 DKs' interface MCU,
/// Thingy:91, serial modem firmware), as sysfs writes it.
pub const NORDIC_VID: &str = "1915";
/// USB vendor id of SEGGER (the J-Link debugger on the DKs, with its
/// virtual COM ports).
pub const SEGGER_VID: &str = "1366";
/// Where 90-nrf-provd.rules puts its links.
pub const STABLE_DIR: &str = "/dev/nrf91";

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PortListError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Makers whose ports the udev rule takes care of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Maker {
    Nordic,
    Segger,
}

impl Maker {
    pub fn label(self) -> &'static str {
        match self {
            Maker::Nordic => "Nordic",
            Maker::Segger => "SEGGER",
        }
    }
}

/// One serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortInfo {
    /// Kernel name, e.g. `ttyACM0`.
    pub name: String,
    /// Device node, e.g. `/dev/ttyACM0`.
    pub device: PathBuf,
    /// Kernel driver of the port's device, e.g. `cdc_acm`, `ftdi_sio`.
    pub driver: Option<String>,
    /// Present when the port is on USB.
    pub usb: Option<UsbInfo>,
    pub maker: Option<Maker>,
    /// The link 90-nrf-provd.rules creates for this port, if it creates one.
    pub stable_name: Option<PathBuf>,
}

/// What sysfs says about a USB port's interface and device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbInfo {
    /// Four lower-case hex digits, as in sysfs (`idVendor`).
    pub vendor_id: String,
    pub product_id: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// The device's serial number string, as the device reports it.
    pub serial: Option<String>,
    /// `bInterfaceNumber`: two hex digits, e.g. `00`, `0a`.
    pub interface_number: Option<String>,
    /// The interface's own string descriptor, when it has one.
    pub interface_name: Option<String>,
}

/// Every serial port under `sysfs` (normally `/sys`), sorted by name
/// (`ttyACM2` before `ttyACM10`). No `class/tty` directory means no ports.
pub fn list(sysfs: &Path) -> Result<Vec<PortInfo>, PortListError> {
    let class = sysfs.join("class/tty");
    let entries = match std::fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PortListError {
                path: class,
                source,
            });
        }
    };
    let root = std::fs::canonicalize(sysfs).map_err(|source| PortListError {
        path: sysfs.to_owned(),
        source,
    })?;
    let mut ports = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PortListError {
            path: class.clone(),
            source,
        })?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(port) = port(&root, &class.join(&name), name) {
            ports.push(port);
        }
    }
    ports.sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
    Ok(ports)
}

/// The port behind `/sys/class/tty/<name>`, or `None` for a tty that is no
/// serial port (virtual consoles, ptys: no `device` link) or a serial-core
/// slot with no UART behind it (`type` 0, e.g. most of ttyS0..ttyS31).
fn port(root: &Path, tty: &Path, name: String) -> Option<PortInfo> {
    let device_dir = std::fs::canonicalize(tty.join("device")).ok()?;
    if attribute(tty, "type").as_deref() == Some("0") {
        return None;
    }
    let device = PathBuf::from("/dev").join(devnode(tty).unwrap_or_else(|| name.clone()));
    let driver = std::fs::canonicalize(device_dir.join("driver"))
        .ok()
        .and_then(|p| p.file_name()?.to_str().map(str::to_owned));
    let usb = usb_info(root, &device_dir);
    let maker = usb.as_ref().and_then(|usb| match usb.vendor_id.as_str() {
        NORDIC_VID => Some(Maker::Nordic),
        SEGGER_VID => Some(Maker::Segger),
        _ => None,
    });
    let stable_name = match (&usb, maker) {
        (Some(usb), Some(_)) => stable_name(usb),
        _ => None,
    };
    Some(PortInfo {
        name,
        device,
        driver,
        usb,
        maker,
        stable_name,
    })
}

/// `DEVNAME=` of the tty's uevent (the node's path below /dev).
fn devnode(tty: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(tty.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|line| line.strip_prefix("DEVNAME="))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

fn usb_info(root: &Path, device_dir: &Path) -> Option<UsbInfo> {
    let mut interface = None;
    for dir in device_dir.ancestors().take_while(|d| d.starts_with(root)) {
        if interface.is_none() && dir.join("bInterfaceNumber").is_file() {
            interface = Some(dir);
            continue;
        }
        if dir.join("idVendor").is_file() {
            return Some(UsbInfo {
                vendor_id: attribute(dir, "idVendor")?,
                product_id: attribute(dir, "idProduct").unwrap_or_default(),
                manufacturer: attribute(dir, "manufacturer"),
                product: attribute(dir, "product"),
                serial: attribute(dir, "serial"),
                interface_number: interface.and_then(|i| attribute(i, "bInterfaceNumber")),
                interface_name: interface.and_then(|i| attribute(i, "interface")),
            });
        }
    }
    None
}

/// A sysfs attribute without its trailing newline; `None` when missing or empty.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    (!text.is_empty()).then(|| text.to_owned())
}

/// `/dev/nrf91/<ID_SERIAL_SHORT>-if<ID_USB_INTERFACE_NUM>`, when udev sets
/// both (the rule needs both).
pub fn stable_name(usb: &UsbInfo) -> Option<PathBuf> {
    let serial = udev_serial_short(usb.serial.as_deref()?)?;
    let interface = usb.interface_number.as_deref()?;
    Some(PathBuf::from(format!(
        "{STABLE_DIR}/{serial}-if{interface}"
    )))
}

/// `ID_SERIAL_SHORT` as udev's usb_id builtin derives it from the `serial`
/// attribute: none at all when a byte is below 0x20, above 0x7f or a comma;
/// else leading and trailing whitespace dropped, each inner run of it one
/// `_`, and every character but ASCII letters, digits and `#+-.:=@_` (or a
/// `\x` escape) replaced by `_`.
pub fn udev_serial_short(serial: &str) -> Option<String> {
    let bytes = serial.as_bytes();
    if bytes
        .iter()
        .any(|&b| !(0x20..=0x7f).contains(&b) || b == b',')
    {
        return None;
    }
    let mut collapsed = String::with_capacity(serial.len());
    for (i, word) in serial.split_ascii_whitespace().enumerate() {
        if i > 0 {
            collapsed.push('_');
        }
        collapsed.push_str(word);
    }
    let mut out = String::with_capacity(collapsed.len());
    let mut chars = collapsed.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
            out.push(c);
        } else if c == '\\' && chars.peek() == Some(&'x') {
            out.push(c);
            out.push('x');
            chars.next();
        } else {
            out.push('_');
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Sort key: `ttyACM10` after `ttyACM9`.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits_at = name
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (stem, digits) = name.split_at(digits_at);
    (stem, digits.parse().unwrap_or(0), digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_short_follows_udev() {
        assert_eq!(
            udev_serial_short("001050012345").as_deref(),
            Some("001050012345")
        );
        assert_eq!(
            udev_serial_short("  AB 12   34 ").as_deref(),
            Some("AB_12_34")
        );
        assert_eq!(udev_serial_short("a/b*c").as_deref(), Some("a_b_c"));
        assert_eq!(
            udev_serial_short("x#+-.:=@_y").as_deref(),
            Some("x#+-.:=@_y")
        );
        assert_eq!(udev_serial_short(r"a\x20b").as_deref(), Some(r"a\x20b"));
        assert_eq!(udev_serial_short("a\u{7f}b").as_deref(), Some("a_b"));
        // udev drops the whole serial for these.
        assert_eq!(udev_serial_short("12,34"), None);
        assert_eq!(udev_serial_short("12\u{1}34"), None);
        assert_eq!(udev_serial_short("12\t34"), None, "a tab is below 0x20");
        assert_eq!(udev_serial_short("Ünï"), None);
        assert_eq!(udev_serial_short("   "), None);
    }

    #[test]
    fn names_sort_by_number() {
        let mut names = vec!["ttyACM10", "ttyS0", "ttyACM9", "ttyACM0", "ttyUSB1"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(
            names,
            ["ttyACM0", "ttyACM9", "ttyACM10", "ttyS0", "ttyUSB1"]
        );
    }
}
