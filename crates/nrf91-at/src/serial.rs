//! Serial transport: port settings and `open`. Real ports and pseudo-terminal
//! slaves go through the same [`open`].
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::at::AtError;

/// Line ending appended to outgoing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LineEnding {
    #[default]
    Crlf,
    Cr,
    Lf,
    Nul,
}

impl LineEnding {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Crlf => b"\r\n",
            LineEnding::Cr => b"\r",
            LineEnding::Lf => b"\n",
            LineEnding::Nul => b"\0",
        }
    }
}

/// Flow control; RTS/CTS by default, as Nordic's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    None,
    #[default]
    RtsCts,
    XonXoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Port settings, the one place their defaults live (115200 8N1, RTS/CTS,
/// DTR asserted, exclusive), as Nordic's tools open a port. The station
/// config's `[serial]` fills the same struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
    pub dtr: bool,
    pub exclusive: bool,
}

impl Default for SerialSettings {
    fn default() -> Self {
        SerialSettings {
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::RtsCts,
            dtr: true,
            exclusive: true,
        }
    }
}

fn invalid(path: &Path, what: String) -> AtError {
    AtError::Open {
        path: path.to_path_buf(),
        source: tokio_serial::Error::new(tokio_serial::ErrorKind::InvalidInput, what),
    }
}

/// Open `path` with `settings`. Modem-control failures (DTR on a pty gives
/// ENOTTY/EINVAL) are logged at debug and ignored, so pseudo-terminals work.
pub fn open(path: &Path, settings: &SerialSettings) -> Result<Port, AtError> {
    let data_bits = match settings.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        8 => tokio_serial::DataBits::Eight,
        n => return Err(invalid(path, format!("data_bits {n} (expected 5..=8)"))),
    };
    let stop_bits = match settings.stop_bits {
        1 => tokio_serial::StopBits::One,
        2 => tokio_serial::StopBits::Two,
        n => return Err(invalid(path, format!("stop_bits {n} (expected 1 or 2)"))),
    };
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let flow = match settings.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::RtsCts => tokio_serial::FlowControl::Hardware,
        FlowControl::XonXoff => tokio_serial::FlowControl::Software,
    };
    let open_error = |source| AtError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut port = tokio_serial::new(path.to_string_lossy(), settings.baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow)
        .dtr_on_open(settings.dtr)
        .exclusive(settings.exclusive)
        .open_native_async()
        .map_err(open_error)?;
    // serialport sets DTR best-effort only for baud > 0; assert it explicitly
    // (development kits need it) and tolerate ptys that refuse the ioctl.
    if let Err(e) = port.write_data_terminal_ready(settings.dtr) {
        tracing::debug!(path = %path.display(), error = %e, "DTR not settable (pty?)");
    }
    Ok(Port(port))
}

/// An open serial port as a byte stream. A write goes straight into the
/// kernel's tty buffer (nothing is buffered on our side), so `flush` has
/// nothing to do; `SerialStream`'s own flush is `tcdrain`, a blocking call
/// that holds a runtime thread until the UART has sent every byte (a
/// command's wire time at the baud rate, each time, on a thread many ports
/// share).
#[derive(Debug)]
pub struct Port(SerialStream);

impl Port {
    /// The port itself (modem lines, settings).
    pub fn get_mut(&mut self) -> &mut SerialStream {
        &mut self.0
    }
}

impl AsyncRead for Port {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Port {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_data_bits_is_an_open_error() {
        let s = SerialSettings {
            data_bits: 9,
            ..SerialSettings::default()
        };
        assert!(matches!(
            open(Path::new("/dev/null"), &s),
            Err(AtError::Open { .. })
        ));
    }
}
