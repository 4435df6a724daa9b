//! Update windows: `"Mon-Fri 02:00-05:00"`, `"Sat,Sun 00:00-06:00 UTC"`,
//! `"22:00-02:00 Europe/Berlin"` (every day, across midnight). Without a
//! time zone, the host's.

use std::str::FromStr;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone)]
pub struct Window {
    text: String,
    /// Monday first.
    days: [bool; 7],
    start: u16,
    end: u16,
    tz: TimeZone,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Window, String> {
        let bad = |why: String| {
            format!("invalid window {text:?}: {why}; write e.g. \"Mon-Fri 02:00-05:00\" or \"Sat,Sun 00:00-06:00 UTC\"")
        };
        let mut parts: Vec<&str> = text.split_whitespace().collect();
        let mut days = [true; 7];
        if parts.first().is_some_and(|p| !p.contains(':')) {
            days = parse_days(parts.remove(0)).map_err(bad)?;
        }
        let range = if parts.is_empty() { return Err(bad("no time range".into())) } else { parts.remove(0) };
        let (start, end) = range.split_once('-').ok_or_else(|| bad(format!("{range:?} is not HH:MM-HH:MM")))?;
        let (start, end) = (minutes(start).map_err(bad)?, minutes(end).map_err(bad)?);
        if start == end {
            return Err(bad("the range is empty".into()));
        }
        let tz = match parts.as_slice() {
            [] => TimeZone::system(),
            [name] => TimeZone::get(name).map_err(|e| bad(format!("unknown time zone {name:?} ({e})")))?,
            more => return Err(bad(format!("unexpected {:?}", more.join(" ")))),
        };
        Ok(Window { text: text.to_string(), days, start, end, tz })
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text == "*" || text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let index = |d: &str| {
        DAYS.iter().position(|n| d.eq_ignore_ascii_case(n)).ok_or_else(|| format!("{d:?} is not a day (Mon..Sun)"))
    };
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (index(a)?, index(b)?);
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[index(item)?] = true,
        }
    }
    Ok(days)
}

fn minutes(hhmm: &str) -> Result<u16, String> {
    let (h, m) = hhmm.split_once(':').ok_or_else(|| format!("{hhmm:?} is not HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
    );
    // 24:00 closes a window at midnight.
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{hhmm:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

fn weekday(date: Date) -> usize {
    date.weekday().to_monday_zero_offset() as usize
}

impl Window {
    pub fn is_open(&self, now: Timestamp) -> bool {
        let z = now.to_zoned_datetime(self.tz.clone());
        let minute = u16::from(z.hour() as u8) * 60 + u16::from(z.minute() as u8);
        let today = weekday(z.date());
        let yesterday = (today + 6) % 7;
        if self.start < self.end {
            self.days[today] && (self.start..self.end).contains(&minute)
        } else {
            (self.days[today] && minute >= self.start) || (self.days[yesterday] && minute < self.end)
        }
    }

    /// When this window next opens after `now`.
    pub fn next_open(&self, now: Timestamp) -> Option<ZonedDateTime> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        (0..=7).find_map(|offset: i64| {
            let date = today.checked_add(offset.days()).ok()?;
            if !self.days[weekday(date)] {
                return None;
            }
            let opens = date
                .at((self.start / 60) as i8, (self.start % 60) as i8, 0, 0)
                .to_zoned_datetime(self.tz.clone())
                .ok()?;
            (opens.timestamp() > now).then_some(opens)
        })
    }
}

/// Ok when no window is configured or one is open; else when the next
/// opens.
pub fn check(windows: &[Window], now: Timestamp) -> Result<(), Option<ZonedDateTime>> {
    if windows.is_empty() || windows.iter().any(|w| w.is_open(now)) {
        return Ok(());
    }
    Err(windows.iter().filter_map(|w| w.next_open(now)).min_by_key(|z| z.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekday_windows_open_and_close() {
        let w: Window = "Mon-Fri 02:00-05:00 UTC".parse().unwrap();
        assert!(w.is_open(at("2026-11-25T03:00:00Z")), "Wednesday 03:00");
        assert!(!w.is_open(at("2026-11-25T05:00:00Z")), "the end is exclusive");
        assert!(!w.is_open(at("2026-11-28T03:00:00Z")), "Saturday");
        let next = w.next_open(at("2026-11-28T03:00:00Z")).unwrap();
        assert_eq!(next.timestamp(), at("2026-11-30T02:00:00Z"), "Monday next");
    }

    #[test]
    fn overnight_windows_belong_to_their_start_day() {
        let w: Window = "Fri 22:00-02:00 UTC".parse().unwrap();
        assert!(w.is_open(at("2026-11-27T23:00:00Z")), "Friday night");
        assert!(w.is_open(at("2026-11-28T01:00:00Z")), "early Saturday");
        assert!(!w.is_open(at("2026-11-29T01:00:00Z")), "early Sunday");
    }

    #[test]
    fn time_zones_and_several_windows() {
        let berlin: Window = "Sat,Sun 00:00-06:00 Europe/Berlin".parse().unwrap();
        assert!(berlin.is_open(at("2026-11-28T04:00:00Z")), "05:00 in Berlin");
        assert!(!berlin.is_open(at("2026-11-28T05:30:00Z")), "06:30 in Berlin");
        let daily: Window = "12:00-13:00 UTC".parse().unwrap();
        let windows = [berlin, daily];
        assert!(check(&windows, at("2026-11-25T12:30:00Z")).is_ok());
        let next = check(&windows, at("2026-11-25T14:00:00Z")).unwrap_err().unwrap();
        assert_eq!(next.timestamp(), at("2026-11-26T12:00:00Z"));
        assert!(check(&[], at("2026-11-25T14:00:00Z")).is_ok(), "no window: any time");
    }

    #[test]
    fn bad_windows_say_why() {
        for (text, want) in [
            ("Mon-Fri", "no time range"),
            ("Mon-Fry 02:00-03:00", "not a day"),
            ("25:00-26:00", "not a time of day"),
            ("02:00-02:00", "empty"),
            ("02:00-03:00 Mars/Olympus", "unknown time zone"),
            ("Mon 0200-0300", "not HH:MM"),
        ] {
            let err = text.parse::<Window>().unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
