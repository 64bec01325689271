//! `nrf-provd ports` over a fake sysfs tree laid out (and linked) like the
//! kernel's: a SEGGER J-Link with two CDC ACM interfaces, a Thingy:91 whose
//! serial number udev rewrites, a Nordic board without a serial number, an
//! FTDI usb-serial adapter, an on-board UART, and ttys that are no ports.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USB: &str = "devices/pci0000:00/0000:00:14.0/usb1";

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    // sysfs attributes end in a newline.
    std::fs::write(path, format!("{content}\n")).unwrap_or_else(|e| panic!("{e}"));
}

/// A relative symlink at `root/at` to `root/target`, as sysfs makes them.
fn link(root: &Path, at: &str, target: &str) {
    let at_path = root.join(at);
    if let Some(parent) = at_path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    let ups = Path::new(at)
        .parent()
        .map_or(0, |parent| parent.components().count());
    symlink(format!("{}{target}", "../".repeat(ups)), &at_path)
        .unwrap_or_else(|e| panic!("{}: {e}", at_path.display()));
}

/// `<parent>/tty/<name>` with its uevent, its `device` link to `parent`
/// (the USB interface for cdc_acm, the usb-serial port for ttyUSB, the
/// platform device for a UART) and its `class/tty` link.
fn tty(root: &Path, parent: &str, name: &str) -> PathBuf {
    let dir = format!("{parent}/tty/{name}");
    write(
        &root.join(&dir).join("uevent"),
        &format!("MAJOR=166\nMINOR=0\nDEVNAME={name}"),
    );
    link(root, &format!("{dir}/device"), parent);
    link(root, &format!("class/tty/{name}"), &dir);
    root.join(dir)
}

fn usb_device(root: &Path, port: &str, attrs: &[(&str, &str)]) -> String {
    let dir = format!("{USB}/{port}");
    for (name, value) in attrs {
        write(&root.join(&dir).join(name), value);
    }
    dir
}

fn interface(root: &Path, device: &str, config_if: &str, number: &str, driver: &str) -> String {
    let port = device.rsplit('/').next().unwrap_or_default();
    let dir = format!("{device}/{port}:{config_if}");
    write(&root.join(&dir).join("bInterfaceNumber"), number);
    write(&root.join(&dir).join("bInterfaceClass"), "02");
    let driver_dir = format!("bus/usb/drivers/{driver}");
    std::fs::create_dir_all(root.join(&driver_dir)).unwrap_or_else(|e| panic!("{e}"));
    link(root, &format!("{dir}/driver"), &driver_dir);
    dir
}

fn fake_sysfs(root: &Path) {
    // SEGGER J-Link OB of an nRF9160 DK: two virtual COM ports.
    let jlink = usb_device(
        root,
        "1-2",
        &[
            ("idVendor", "1366"),
            ("idProduct", "1061"),
            ("manufacturer", "SEGGER"),
            ("product", "J-Link"),
            ("serial", "001050123456"),
        ],
    );
    let if0 = interface(root, &jlink, "1.0", "00", "cdc_acm");
    tty(root, &if0, "ttyACM0");
    let if2 = interface(root, &jlink, "1.2", "02", "cdc_acm");
    tty(root, &if2, "ttyACM1");

    // Thingy:91: a serial number with a space and a slash.
    let thingy = usb_device(
        root,
        "1-3",
        &[
            ("idVendor", "1915"),
            ("idProduct", "9100"),
            ("manufacturer", "Nordic Semiconductor"),
            ("product", "Thingy:91 UART"),
            ("serial", "TH91 A/7"),
        ],
    );
    let if0 = interface(root, &thingy, "1.0", "00", "cdc_acm");
    write(&root.join(&if0).join("interface"), "CDC ACM serial");
    tty(root, &if0, "ttyACM2");

    // A Nordic board that reports no serial number: no stable name.
    let bare = usb_device(root, "1-4", &[("idVendor", "1915"), ("idProduct", "520f")]);
    let if1 = interface(root, &bare, "1.1", "01", "cdc_acm");
    tty(root, &if1, "ttyACM10");

    // FTDI adapter: ttyUSB0's device is a usb-serial port below the interface.
    let ftdi = usb_device(
        root,
        "1-5",
        &[
            ("idVendor", "0403"),
            ("idProduct", "6001"),
            ("manufacturer", "FTDI"),
            ("product", "FT232R USB UART"),
            ("serial", "A50285BI"),
        ],
    );
    let if0 = interface(root, &ftdi, "1.0", "00", "ftdi_sio");
    let port = format!("{if0}/ttyUSB0");
    write(&root.join(&port).join("port_number"), "0");
    std::fs::create_dir_all(root.join("bus/usb-serial/drivers/ftdi_sio"))
        .unwrap_or_else(|e| panic!("{e}"));
    link(
        root,
        &format!("{port}/driver"),
        "bus/usb-serial/drivers/ftdi_sio",
    );
    tty(root, &port, "ttyUSB0");

    // On-board UART (present) and an empty serial8250 slot (type 0).
    let uart = tty(root, "devices/pnp0/00:01", "ttyS0");
    write(&uart.join("type"), "4");
    let slot = tty(root, "devices/platform/serial8250", "ttyS1");
    write(&slot.join("type"), "0");

    // A virtual console and a pty: no device link.
    for name in ["tty1", "ptmx"] {
        let dir = format!("devices/virtual/tty/{name}");
        write(&root.join(&dir).join("uevent"), &format!("DEVNAME={name}"));
        link(root, &format!("class/tty/{name}"), &dir);
    }
}

fn ports(sysfs: &Path, json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nrf-provd"));
    command.arg("ports").arg("--sysfs").arg(sysfs);
    if json {
        command.arg("--json");
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("run nrf-provd: {e}"))
}

#[test]
fn lists_ports_with_usb_identity_and_stable_names() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fake_sysfs(dir.path());

    let output = ports(dir.path(), true);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    let list = list.as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "ttyACM0", "ttyACM1", "ttyACM2", "ttyACM10", "ttyS0", "ttyUSB0"
        ],
        "empty UART slots and non-ports are left out, numbers sort as numbers"
    );
    let port = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_default()
    };

    let acm1 = port("ttyACM1");
    assert_eq!(acm1["device"], "/dev/ttyACM1");
    assert_eq!(acm1["driver"], "cdc_acm");
    assert_eq!(acm1["maker"], "segger");
    assert_eq!(acm1["usb"]["vendor_id"], "1366");
    assert_eq!(acm1["usb"]["product_id"], "1061");
    assert_eq!(acm1["usb"]["manufacturer"], "SEGGER");
    assert_eq!(acm1["usb"]["serial"], "001050123456");
    assert_eq!(acm1["usb"]["interface_number"], "02");
    assert_eq!(acm1["stable_name"], "/dev/nrf91/001050123456-if02");

    let thingy = port("ttyACM2");
    assert_eq!(thingy["maker"], "nordic");
    assert_eq!(
        thingy["usb"]["serial"], "TH91 A/7",
        "as the device reports it"
    );
    assert_eq!(thingy["usb"]["interface_name"], "CDC ACM serial");
    assert_eq!(
        thingy["stable_name"], "/dev/nrf91/TH91_A_7-if00",
        "ID_SERIAL_SHORT as udev derives it"
    );

    let bare = port("ttyACM10");
    assert_eq!(bare["maker"], "nordic");
    assert!(bare["usb"]["serial"].is_null());
    assert!(bare["stable_name"].is_null());

    let ftdi = port("ttyUSB0");
    assert_eq!(ftdi["driver"], "ftdi_sio");
    assert_eq!(ftdi["usb"]["vendor_id"], "0403");
    assert_eq!(ftdi["usb"]["interface_number"], "00");
    assert!(ftdi["maker"].is_null());
    assert!(
        ftdi["stable_name"].is_null(),
        "the rule leaves other makers alone"
    );

    let uart = port("ttyS0");
    assert!(uart["usb"].is_null());
    assert!(uart["stable_name"].is_null());
}

#[test]
fn the_table_marks_nordic_and_segger_ports() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fake_sysfs(dir.path());
    let output = ports(dir.path(), false);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8_lossy(&output.stdout);
    let line = |device: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{device} ")))
            .unwrap_or_else(|| panic!("no line for {device} in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("/dev/ttyACM0"),
        "/dev/ttyACM0 1366:1061 001050123456 00 SEGGER SEGGER / J-Link /dev/nrf91/001050123456-if00"
    );
    assert!(line("/dev/ttyACM2").contains(
        " Nordic Nordic Semiconductor / Thingy:91 UART / CDC ACM serial /dev/nrf91/TH91_A_7-if00"
    ));
    assert!(line("/dev/ttyACM10").ends_with("- (no USB serial number)"));
    assert!(line("/dev/ttyUSB0").contains(" - FTDI / FT232R USB UART -"));
    assert!(
        table.contains("6 serial port(s), 4 Nordic/SEGGER, 3 with a stable name."),
        "{table}"
    );
    assert!(table.contains(r#"paths = ["/dev/nrf91/*"]"#), "{table}");
}

#[test]
fn no_ports_is_said_and_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("class/tty")).unwrap_or_else(|e| panic!("{e}"));
    let output = ports(dir.path(), false);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "No serial ports found.\n"
    );
    let output = ports(dir.path(), true);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
}
