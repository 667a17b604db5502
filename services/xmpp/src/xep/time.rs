//! XEP-0202: Entity Time (`<time xmlns='urn:xmpp:time'>` with `tzo` and `utc`), and the
//! XEP-0082 date-time profile (`2026-11-20T23:58:11Z`, `2026-11-20T23:58:11.123Z`), computed
//! with days-from-civil arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small and positive by construction.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Seconds since the epoch (floored) and the nanoseconds within that second.
fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

fn format(t: SystemTime, millis: bool) -> String {
    let (secs, nanos) = split(t);
    let (y, m, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    if millis {
        let ms = nanos / 1_000_000;
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

/// XEP-0082 DateTime in UTC with whole seconds: `2026-11-20T23:58:11Z`.
pub fn format_datetime(t: SystemTime) -> String {
    format(t, false)
}

/// XEP-0082 DateTime in UTC with milliseconds: `2026-11-20T23:58:11.123Z`.
pub fn format_datetime_millis(t: SystemTime) -> String {
    format(t, true)
}

/// Milliseconds only when the time has any, so whole-second times keep the short form.
pub(crate) fn format_stamp(t: SystemTime) -> String {
    format(t, split(t).1 / 1_000_000 != 0)
}

/// Parses `hh:mm`-style two-digit fields.
fn two(b: &[u8], at: usize) -> Option<u32> {
    let hi = b.get(at).filter(|c| c.is_ascii_digit())?;
    let lo = b.get(at + 1).filter(|c| c.is_ascii_digit())?;
    Some(u32::from(hi - b'0') * 10 + u32::from(lo - b'0'))
}

/// Parses a time-zone designator (`Z`, `+hh:mm`, `-hh:mm`) into minutes east of UTC.
fn parse_tzd(b: &[u8]) -> Option<i32> {
    match b {
        b"Z" => Some(0),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = two(b, 1).filter(|h| *h <= 23)?;
            let m = two(b, 4).filter(|m| *m <= 59)?;
            let mins = i32::try_from(h * 60 + m).ok()?;
            Some(if *sign == b'-' { -mins } else { mins })
        }
        _ => None,
    }
}

/// Parses an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, any fraction length, `Z` or a
/// numeric offset).
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let year = i64::from(two(b, 0)? * 100 + two(b, 2)?);
    let month = two(b, 5).filter(|m| (1..=12).contains(m))?;
    let day = two(b, 8).filter(|d| *d >= 1 && *d <= days_in_month(year, month))?;
    let hour = two(b, 11).filter(|h| *h <= 23)?;
    let minute = two(b, 14).filter(|m| *m <= 59)?;
    let second = two(b, 17).filter(|s| *s <= 59)?;
    let mut rest = b.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000_000;
        for &c in frac.get(..digits.min(9))? {
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = frac.get(digits..)?;
    }
    let offset_mins = i64::from(parse_tzd(rest)?);
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_mins * 60;
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// `parse_datetime` kept to the millisecond, the precision the XEP element types write: a
/// finer fraction would not survive the element's round trip (found by fuzzing).
pub(crate) fn parse_stamp(s: &str) -> Option<SystemTime> {
    let t = parse_datetime(s)?;
    t.checked_sub(Duration::from_nanos(u64::from(split(t).1 % 1_000_000)))
}

/// An entity's time: its offset from UTC and the current UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityTime {
    /// The entity's time-zone offset, in minutes east of UTC.
    pub tzo_minutes: i16,
    pub utc: SystemTime,
}

impl EntityTime {
    /// The current time, for an entity running on UTC.
    pub fn now() -> Self {
        EntityTime {
            tzo_minutes: 0,
            utc: SystemTime::now(),
        }
    }

    /// The (empty) request payload.
    pub fn request() -> Element {
        Element::new("time", ns::TIME)
    }
}

fn format_tzo(minutes: i16) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

impl TryFrom<&Element> for EntityTime {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "time", ns::TIME)?;
        let tzo = el
            .get_child("tzo", ns::TIME)
            .ok_or(XepError::MissingChild("tzo"))?
            .text();
        let utc = el
            .get_child("utc", ns::TIME)
            .ok_or(XepError::MissingChild("utc"))?
            .text();
        let tzo_minutes = parse_tzd(tzo.trim().as_bytes())
            .and_then(|m| i16::try_from(m).ok())
            .ok_or(XepError::BadValue("tzo"))?;
        let utc = parse_stamp(utc.trim()).ok_or(XepError::BadValue("utc"))?;
        Ok(EntityTime { tzo_minutes, utc })
    }
}

impl From<EntityTime> for Element {
    fn from(t: EntityTime) -> Element {
        Element::new("time", ns::TIME)
            .child(Element::new("tzo", ns::TIME).text_node(format_tzo(t.tzo_minutes)))
            .child(Element::new("utc", ns::TIME).text_node(format_stamp(t.utc)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: u32) -> SystemTime {
        let base = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        base + Duration::from_millis(u64::from(millis))
    }

    /// Known instants (seconds since the epoch) and their UTC rendering.
    const KNOWN: &[(i64, &str)] = &[
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (951_825_600, "2000-02-29T12:00:00Z"),
        (1_031_699_305, "2002-09-10T23:08:25Z"),
        (1_795_219_091, "2026-11-20T23:58:11Z"),
        (4_107_542_400, "2100-03-01T00:00:00Z"),
        (-11_676_096_000, "1600-01-01T00:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ];

    #[test]
    fn formats_known_dates() {
        for &(secs, text) in KNOWN {
            assert_eq!(format_datetime(at(secs, 0)), text, "{secs}");
            assert_eq!(parse_datetime(text), Some(at(secs, 0)), "{text}");
        }
        assert_eq!(
            format_datetime_millis(at(1_795_219_091, 123)),
            "2026-11-20T23:58:11.123Z"
        );
        assert_eq!(
            format_datetime_millis(at(1_795_219_091, 0)),
            "2026-11-20T23:58:11.000Z"
        );
        assert_eq!(
            format_datetime(at(1_795_219_091, 999)),
            "2026-11-20T23:58:11Z"
        );
        // Before the epoch, fractions count forward from the floored second.
        assert_eq!(
            format_datetime_millis(at(-1, 250)),
            "1969-12-31T23:59:59.250Z"
        );
        assert_eq!(
            format_datetime_millis(UNIX_EPOCH - Duration::from_millis(250)),
            "1969-12-31T23:59:59.750Z"
        );
    }

    #[test]
    fn civil_round_trip_over_many_days() {
        let mut expected = (1969, 1, 1);
        for day in days_from_civil(1969, 1, 1)..days_from_civil(2401, 1, 1) {
            assert_eq!(civil_from_days(day), expected, "{day}");
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), day);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    /// Found by fuzzing (fuzz/corpus/xep/crash-sub-millisecond-stamp): a stamp finer than a
    /// millisecond changed when a `Delay` (or `EntityTime`, or a MAM time) was written back.
    #[test]
    fn stamps_are_kept_to_the_millisecond() {
        let t = at(1_795_219_091, 122);
        assert_eq!(parse_stamp("2026-11-20T23:58:11.1223Z"), Some(t));
        assert_eq!(parse_stamp("2026-11-20T23:58:11.122999999Z"), Some(t));
        assert_eq!(parse_stamp("1969-12-31T23:59:59.2509Z"), Some(at(-1, 250)));
        let el = Element::new("time", ns::TIME)
            .child(Element::new("tzo", ns::TIME).text_node("Z"))
            .child(Element::new("utc", ns::TIME).text_node("2026-11-20T23:58:11.1223Z"));
        let v = EntityTime::try_from(&el).unwrap();
        assert_eq!(EntityTime::try_from(&Element::from(v)), Ok(v));
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t = at(1_031_699_305, 0);
        assert_eq!(parse_datetime("2002-09-10T18:08:25-05:00"), Some(t));
        assert_eq!(parse_datetime("2002-09-11T01:38:25+02:30"), Some(t));
        assert_eq!(
            parse_datetime("2002-09-10T23:08:25.5Z"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(
            parse_datetime("2002-09-10T23:08:25.123456789123Z"),
            Some(t + Duration::from_nanos(123_456_789))
        );
        for bad in [
            "",
            "2002-09-10T23:08:25",
            "2002-09-10 23:08:25Z",
            "2002-9-10T23:08:25Z",
            "2002-13-10T23:08:25Z",
            "2002-02-29T23:08:25Z",
            "2002-09-31T23:08:25Z",
            "2002-09-10T24:00:00Z",
            "2002-09-10T23:60:00Z",
            "2002-09-10T23:08:60Z",
            "2002-09-10T23:08:25.Z",
            "2002-09-10T23:08:25+5:00",
            "2002-09-10T23:08:25+05:60",
            "2002-09-10T23:08:25ZZ",
            "２００２-09-10T23:08:25Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert!(parse_datetime("2000-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn entity_time_round_trip_and_size() {
        let t = EntityTime {
            tzo_minutes: -360,
            utc: at(1_166_551_115, 0),
        };
        let el = Element::from(t);
        assert_eq!(
            el.to_string(),
            "<time xmlns=\"urn:xmpp:time\"><tzo>-06:00</tzo><utc>2006-12-19T17:58:35Z</utc></time>"
        );
        assert_eq!(EntityTime::try_from(&el), Ok(t));
        let t = EntityTime {
            tzo_minutes: 330,
            utc: at(1_166_551_115, 42),
        };
        let el = Element::from(t);
        assert_eq!(el.get_child("tzo", ns::TIME).unwrap().text(), "+05:30");
        assert_eq!(
            el.get_child("utc", ns::TIME).unwrap().text(),
            "2006-12-19T17:58:35.042Z"
        );
        assert_eq!(EntityTime::try_from(&el), Ok(t));
        let now = EntityTime::now();
        assert_eq!(now.tzo_minutes, 0);
        assert!(std::mem::size_of::<EntityTime>() <= 24);
    }

    #[test]
    fn entity_time_rejects_bad_input() {
        assert_eq!(
            EntityTime::try_from(&EntityTime::request()),
            Err(XepError::MissingChild("tzo"))
        );
        let mk = |tzo: &str, utc: &str| {
            Element::new("time", ns::TIME)
                .child(Element::new("tzo", ns::TIME).text_node(tzo))
                .child(Element::new("utc", ns::TIME).text_node(utc))
        };
        assert_eq!(
            EntityTime::try_from(&mk("+25:00", "2006-12-19T17:58:35Z")),
            Err(XepError::BadValue("tzo"))
        );
        assert_eq!(
            EntityTime::try_from(&mk("Z", "yesterday")),
            Err(XepError::BadValue("utc"))
        );
        assert_eq!(
            EntityTime::try_from(&mk("Z", "2006-12-19T17:58:35Z")).map(|t| t.tzo_minutes),
            Ok(0)
        );
        assert_eq!(
            EntityTime::try_from(&Element::new("time", ns::PING)),
            Err(XepError::WrongElement("time"))
        );
    }
}
