//! `nrf-provd ports`: the serial ports present, their USB identity, and
//! the stable name 90-nrf-provd.rules gives Nordic and SEGGER ports — what
//! a technician needs to write `ports.paths` in station.toml.
//!
//! Exit status: 0 (also when there are no ports); 2 when sysfs cannot be read.
use std::path::PathBuf;
use std::process::ExitCode;

use super::error_exit;
use crate::port_list::{self, PortInfo, UsbInfo};

#[derive(Debug, clap::Args)]
pub struct PortsArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Root of the sysfs tree to read (tests build one of their own).
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
}

pub fn run(args: PortsArgs) -> ExitCode {
    let ports = match port_list::list(&args.sysfs) {
        Ok(ports) => ports,
        Err(e) => return error_exit(format!("cannot list serial ports: {e}")),
    };
    if args.json {
        match serde_json::to_string_pretty(&ports) {
            Ok(json) => println!("{json}"),
            Err(e) => return error_exit(e),
        }
    } else {
        print!("{}", render(&ports));
    }
    ExitCode::SUCCESS
}

const HEADER: [&str; 7] = [
    "PORT",
    "USB ID",
    "SERIAL",
    "IF",
    "MAKER",
    "DESCRIPTION",
    "STABLE NAME (90-nrf-provd.rules)",
];

/// The table and a closing line that says what to put in station.toml.
pub fn render(ports: &[PortInfo]) -> String {
    if ports.is_empty() {
        return "No serial ports found.\n".into();
    }
    let rows: Vec<[String; 7]> = ports.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    let ours = ports.iter().filter(|p| p.maker.is_some()).count();
    let named = ports.iter().filter(|p| p.stable_name.is_some()).count();
    out.push_str(&format!(
        "\n{} serial port(s), {ours} Nordic/SEGGER, {named} with a stable name.\n",
        ports.len()
    ));
    if named > 0 {
        out.push_str(&format!(
            "With 90-nrf-provd.rules installed (the package does), station.toml takes those as\n  \
             paths = [\"{}/*\"]\n",
            port_list::STABLE_DIR
        ));
    }
    out
}

fn row(port: &PortInfo) -> [String; 7] {
    let dash = || "-".to_string();
    let usb = port.usb.as_ref();
    let description = match usb {
        Some(usb) => {
            let mut parts: Vec<&str> = [&usb.manufacturer, &usb.product, &usb.interface_name]
                .into_iter()
                .filter_map(|s| s.as_deref())
                .collect();
            parts.dedup();
            parts.join(" / ")
        }
        None => port.driver.clone().unwrap_or_default(),
    };
    let stable = match (&port.stable_name, port.maker, usb) {
        (Some(name), _, _) => name.display().to_string(),
        (None, Some(_), Some(usb)) => format!("- ({})", why_unnamed(usb)),
        _ => dash(),
    };
    [
        port.device.display().to_string(),
        usb.map_or_else(dash, |u| format!("{}:{}", u.vendor_id, u.product_id)),
        usb.and_then(|u| u.serial.clone()).unwrap_or_else(dash),
        usb.and_then(|u| u.interface_number.clone())
            .unwrap_or_else(dash),
        port.maker.map_or_else(dash, |m| m.label().to_string()),
        if description.is_empty() {
            dash()
        } else {
            description
        },
        stable,
    ]
}

/// Why udev gives a Nordic or SEGGER port no stable name.
fn why_unnamed(usb: &UsbInfo) -> &'static str {
    if usb.serial.is_none() {
        "no USB serial number"
    } else if usb.interface_number.is_none() {
        "no USB interface number"
    } else {
        "udev ignores this serial number"
    }
}
