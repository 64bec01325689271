//! The `+CCLK` time text (3GPP TS 27.007): `yy/MM/dd,hh:mm:ss±zz`, local
//! time with the zone `zz` in quarter hours (`-48..=+56`), years 2000-2099.
//! The host sets the modem clock with it (`modem::SetClock`); the
//! simulated modem parses it and prints it back for `AT+CCLK?`.

/// Parse `yy/MM/dd,hh:mm:ss±zz` to (Unix seconds, zone in quarter hours);
/// `None` for anything else (the modem answers that with error 50).
pub fn parse(text: &str) -> Option<(i64, i32)> {
    let (date, time) = text.split_once(',')?;
    let mut d = date.split('/').map(|p| p.parse::<u16>().ok());
    let (yy, mo, dd) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || yy > 99 {
        return None;
    }
    let sign_at = time.find(['+', '-'])?;
    let (hms, tz) = time.split_at(sign_at);
    let tz: i32 = tz.parse().ok()?;
    if !(-48..=56).contains(&tz) {
        return None;
    }
    let mut t = hms.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    if t.next().is_some() {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(2000 + i32::from(yy), month, u8::try_from(dd).ok()?).ok()?;
    let local = time::PrimitiveDateTime::new(date, time::Time::from_hms(h, m, s).ok()?);
    Some((
        local.assume_utc().unix_timestamp() - i64::from(tz) * 900,
        tz,
    ))
}

/// Format Unix time `unix` as `yy/MM/dd,hh:mm:ss±zz` in the zone of
/// `tz_quarters` quarter hours. The year is printed modulo 100, so only
/// local times in 2000-2099 read back as they were; a time the calendar
/// cannot hold prints as 1970-01-01.
pub fn format(unix: i64, tz_quarters: i32) -> String {
    let local = time::OffsetDateTime::from_unix_timestamp(unix + i64::from(tz_quarters) * 900)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:02}/{:02}/{:02},{:02}:{:02}:{:02}{}{:02}",
        local.year().rem_euclid(100),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        if tz_quarters < 0 { '-' } else { '+' },
        tz_quarters.abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in [
            "24/02/29,23:59:59-20",
            "00/01/01,00:00:00+00",
            "26/12/01,08:30:00+04",
            "99/12/31,23:59:59+56",
        ] {
            let (unix, tz) = parse(text).unwrap();
            assert_eq!(format(unix, tz), text);
        }
        // 2024-02-29T23:59:59-05:00 is 2024-03-01T04:59:59Z.
        assert_eq!(parse("24/02/29,23:59:59-20"), Some((1_709_269_199, -20)));
    }

    #[test]
    fn unix_time_round_trips_in_any_zone() {
        // Local times in 2000-2099 only: the year has two digits, so
        // 2000-01-01T00:00Z in zone -48 (1999-12-31 local) reads as 2099.
        for unix in [946_771_200, 1_709_269_199, 1_796_110_200] {
            for tz in [-48, -20, 0, 4, 56] {
                assert_eq!(parse(&format(unix, tz)), Some((unix, tz)), "{unix} {tz}");
            }
        }
    }

    #[test]
    fn rejects_what_the_modem_rejects() {
        for bad in [
            "24/02/30,00:00:00+00",
            "24/02/29,00:00:00",
            "x",
            "",
            "24/01/01,25:00:00+00",
            "24/01/01,00:00:00+99",
            "24/01/01,00:00:00-49",
            "100/01/01,00:00:00+00",
            "24/01/01/01,00:00:00+00",
            "24/01/01,00:00:00:00+00",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
