//! A provider's daily statement, as WeChat Pay's v2 `downloadbill` (`bill_type=ALL`) gives
//! it: a header line of the 27 columns below, one line per trade or refund with every field
//! led by a back-tick, then a summary header and one summary line. Amounts are in yuan (two
//! decimals; fees to five). The reader goes a line at a time, so a statement of any length is
//! read in bounded memory, and refuses a statement that is not whole or does not add up,
//! naming the line.
use std::io::Read;

/// The columns of a statement's header, in order.
pub const COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The columns of the summary header.
pub const SUMMARY: [&str; 7] =
    ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额"];

/// One trade or refund of the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its line number in the file, from 1.
    pub line: usize,
    pub time: String,
    pub mch_id: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    /// `SUCCESS`, `REFUND`, `REVOKED`, …
    pub state: String,
    pub currency: String,
    /// 应结订单金额, in fen.
    pub amount: i64,
    pub refund_id: String,
    pub out_refund_no: String,
    /// 退款金额, in fen.
    pub refund_amount: i64,
    pub refund_state: String,
    /// 手续费, in units of 0.00001 yuan.
    pub fee: i64,
}

/// Why a statement is refused: the line (from 1; the last line read for a statement that
/// ends early) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct StatementError {
    pub line: usize,
    pub problem: String,
}

/// The statement's own totals, from its summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub trades: u64,
    /// 应结订单总金额, fen.
    pub amount: i64,
    /// 退款总金额, fen.
    pub refunds: i64,
    /// 手续费总金额, 0.00001 yuan.
    pub fees: i64,
}

/// Reads a statement of merchant `mch_id` line by line: [`Reader::next_line`] until `None`,
/// which comes only once the summary has been read and agrees with the lines.
pub struct Reader<R: Read> {
    records: csv::StringRecordsIntoIter<R>,
    mch_id: String,
    line: usize,
    sums: Totals,
    done: bool,
}

/// A decimal amount of yuan to integer units of 10^-`scale` yuan, exactly (no floats).
pub fn parse_amount(s: &str, scale: u32) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > scale as usize {
        return None;
    }
    let mut v: i64 = whole.parse().ok()?;
    for _ in 0..scale {
        v = v.checked_mul(10)?;
    }
    let mut f: i64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    for _ in frac.len()..scale as usize {
        f *= 10;
    }
    let v = v.checked_add(f)?;
    Some(if neg { -v } else { v })
}

impl<R: Read> Reader<R> {
    /// Reads the header; a header that is not the 27 columns is refused (line 1).
    pub fn new(input: R, mch_id: &str) -> Result<Self, StatementError> {
        let records = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input).into_records();
        let mut r = Reader { records, mch_id: mch_id.to_string(), line: 0, sums: Totals::default(), done: false };
        let header = r.record()?.ok_or_else(|| r.err("the statement is empty"))?;
        let got: Vec<&str> = header.iter().map(|f| f.trim_start_matches('\u{feff}').trim()).collect();
        if got != COLUMNS {
            let unknown = got.iter().find(|c| !COLUMNS.contains(c));
            return Err(r.err(match unknown {
                Some(c) => {
                    format!("unknown column {c:?}; a statement has the {} columns of WeChat Pay's", COLUMNS.len())
                }
                None => format!("expected the {} columns of WeChat Pay's statement, in order", COLUMNS.len()),
            }));
        }
        Ok(r)
    }

    fn err(&self, problem: impl Into<String>) -> StatementError {
        StatementError { line: self.line.max(1), problem: problem.into() }
    }

    fn record(&mut self) -> Result<Option<csv::StringRecord>, StatementError> {
        match self.records.next() {
            None => Ok(None),
            Some(Ok(r)) => {
                self.line += 1;
                Ok(Some(r))
            }
            Some(Err(e)) => {
                self.line += 1;
                Err(self.err(format!("not a CSV line: {e}")))
            }
        }
    }

    /// The next trade or refund; `None` once the summary is read and agrees.
    pub fn next_line(&mut self) -> Result<Option<Line>, StatementError> {
        if self.done {
            return Ok(None);
        }
        let Some(rec) = self.record()? else {
            return Err(self.err("the statement ends without its summary: it was cut short"));
        };
        let first = rec.get(0).unwrap_or_default().trim();
        if first == SUMMARY[0] {
            self.summary(&rec)?;
            self.done = true;
            return Ok(None);
        }
        if rec.len() != COLUMNS.len() {
            return Err(self.err(format!("{} fields where the header has {}", rec.len(), COLUMNS.len())));
        }
        let field = |i: usize| rec.get(i).unwrap_or_default().trim().trim_start_matches('`').to_string();
        let money = |i: usize, scale: u32| {
            let s = field(i);
            if s.is_empty() {
                Ok(0)
            } else {
                parse_amount(&s, scale).ok_or_else(|| self.err(format!("{}: {s:?} is not an amount", COLUMNS[i])))
            }
        };
        let line = Line {
            line: self.line,
            time: field(0),
            mch_id: field(2),
            transaction_id: field(5),
            out_trade_no: field(6),
            state: field(9),
            currency: field(11),
            amount: money(12, 2)?,
            refund_id: field(14),
            out_refund_no: field(15),
            refund_amount: money(16, 2)?,
            refund_state: field(19),
            fee: money(22, 5)?,
        };
        if line.mch_id != self.mch_id {
            return Err(self
                .err(format!("商户号 {:?} is another merchant's; this is {}'s statement", line.mch_id, self.mch_id)));
        }
        if line.out_trade_no.is_empty() {
            return Err(self.err("商户订单号 is empty"));
        }
        let sums = (|| {
            Some(Totals {
                trades: self.sums.trades.checked_add(1)?,
                amount: self.sums.amount.checked_add(line.amount)?,
                refunds: self.sums.refunds.checked_add(line.refund_amount)?,
                fees: self.sums.fees.checked_add(line.fee)?,
            })
        })();
        self.sums = sums.ok_or_else(|| self.err("the amounts add up past what can be counted"))?;
        Ok(Some(line))
    }

    /// The summary header (just read) and its one line: the totals must be the lines' sums,
    /// and nothing may follow.
    fn summary(&mut self, header: &csv::StringRecord) -> Result<(), StatementError> {
        let got: Vec<&str> = header.iter().map(str::trim).collect();
        if got != SUMMARY {
            return Err(self.err(format!("expected the summary header {}", SUMMARY.join(","))));
        }
        let Some(rec) = self.record()? else {
            return Err(self.err("the summary header has no summary line after it: the statement was cut short"));
        };
        if rec.len() != SUMMARY.len() {
            return Err(self.err(format!("{} fields where the summary has {}", rec.len(), SUMMARY.len())));
        }
        let field = |i: usize| rec.get(i).unwrap_or_default().trim().trim_start_matches('`').to_string();
        let amount = |i: usize, scale: u32| {
            parse_amount(&field(i), scale)
                .ok_or_else(|| self.err(format!("{}: {:?} is not an amount", SUMMARY[i], field(i))))
        };
        let stated = Totals {
            trades: field(0).parse().map_err(|_| self.err(format!("{}: {:?} is not a count", SUMMARY[0], field(0))))?,
            amount: amount(1, 2)?,
            refunds: amount(2, 2)?,
            fees: amount(4, 5)?,
        };
        for (name, said, summed) in [
            (SUMMARY[0], stated.trades as i64, self.sums.trades as i64),
            (SUMMARY[1], stated.amount, self.sums.amount),
            (SUMMARY[2], stated.refunds, self.sums.refunds),
            (SUMMARY[4], stated.fees, self.sums.fees),
        ] {
            if said != summed {
                return Err(self.err(format!("{name} says {said} but the lines add up to {summed}")));
            }
        }
        if self.record()?.is_some() {
            return Err(self.err("nothing may follow the summary"));
        }
        Ok(())
    }

    /// The totals of the lines read so far (the statement's, once it is read whole).
    pub fn totals(&self) -> Totals {
        self.sums
    }
}

/// One trade or refund to write into a statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// `yyyy-MM-dd HH:mm:ss`, Beijing time.
    pub time: String,
    pub appid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub openid: String,
    /// The order's amount, fen.
    pub amount: i64,
    /// Set for a refund line: the provider's and the merchant's refund numbers and the amount
    /// paid back (fen).
    pub refund: Option<(String, String, i64)>,
    /// The fee, in 0.00001 yuan (negative on a refund line).
    pub fee: i64,
    pub currency: String,
    pub body: String,
}

/// `value` units of 10^-`scale` yuan as a decimal.
pub fn format_amount(value: i64, scale: u32) -> String {
    let unit = 10i64.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    format!("{sign}{}.{:0width$}", v / unit as u64, v % unit as u64, width = scale as usize)
}

/// Writes a statement of merchant `mch_id` in the reader's format, a line at a time, keeping
/// the totals for the summary [`Writer::finish`] writes.
pub struct Writer<W: std::io::Write> {
    out: W,
    mch_id: String,
    sums: Totals,
    orders: i64,
    asked_back: i64,
}

impl<W: std::io::Write> Writer<W> {
    pub fn new(mut out: W, mch_id: &str) -> std::io::Result<Self> {
        writeln!(out, "{}", COLUMNS.join(","))?;
        Ok(Writer { out, mch_id: mch_id.to_string(), sums: Totals::default(), orders: 0, asked_back: 0 })
    }

    /// A trade line (`SUCCESS`) or, with `refund` set, a refund line (`REFUND`), which WeChat
    /// Pay writes under the original order's numbers, at the refund's time, with the order's
    /// amounts 0 and the refund columns saying what went back (its fee negative).
    pub fn entry(&mut self, e: &Entry) -> std::io::Result<()> {
        let (state, refund_id, out_refund_no, back, back_state) = match &e.refund {
            Some((id, no, amount)) => ("REFUND", id.as_str(), no.as_str(), *amount, "SUCCESS"),
            None => ("SUCCESS", "", "", 0, ""),
        };
        let settled = if e.refund.is_some() { 0 } else { e.amount };
        let fields = [
            e.time.as_str(),
            &e.appid,
            &self.mch_id,
            "0",
            "",
            &e.transaction_id,
            &e.out_trade_no,
            &e.openid,
            "PAP",
            state,
            "OTHERS",
            &e.currency,
            &format_amount(settled, 2),
            "0.00",
            refund_id,
            out_refund_no,
            &format_amount(back, 2),
            "0.00",
            if e.refund.is_some() { "ORIGINAL" } else { "" },
            back_state,
            &e.body,
            "",
            &format_amount(e.fee, 5),
            "0.60%",
            &format_amount(settled, 2),
            &format_amount(back, 2),
            "",
        ];
        let line: Vec<String> = fields.iter().map(|f| format!("`{}", f.replace([',', '\n', '\r', '`'], " "))).collect();
        writeln!(self.out, "{}", line.join(","))?;
        self.sums.trades += 1;
        self.sums.amount += settled;
        self.sums.refunds += back;
        self.sums.fees += e.fee;
        self.orders += settled;
        self.asked_back += back;
        Ok(())
    }

    /// The summary header and line; the writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        writeln!(self.out, "{}", SUMMARY.join(","))?;
        writeln!(
            self.out,
            "`{},`{},`{},`0.00,`{},`{},`{}",
            self.sums.trades,
            format_amount(self.sums.amount, 2),
            format_amount(self.sums.refunds, 2),
            format_amount(self.sums.fees, 5),
            format_amount(self.orders, 2),
            format_amount(self.asked_back, 2),
        )?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(out_trade_no: &str, state: &str, yuan: &str, refund: &str, fee: &str, mch: &str) -> String {
        let mut f = vec![String::new(); 27];
        f[0] = "2027-01-04 10:00:00".into();
        f[1] = "wxd930ea5d5a258f4f".into();
        f[2] = mch.into();
        f[3] = "0".into();
        f[5] = format!("42000{out_trade_no}");
        f[6] = out_trade_no.into();
        f[7] = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into();
        f[8] = "PAP".into();
        f[9] = state.into();
        f[10] = "CMC".into();
        f[11] = "CNY".into();
        f[12] = yuan.into();
        f[13] = "0.00".into();
        f[16] = refund.into();
        f[17] = "0.00".into();
        f[20] = "视频会员".into();
        f[22] = fee.into();
        f[23] = "0.60%".into();
        f[24] = yuan.into();
        f[25] = "0.00".into();
        f.iter().map(|x| format!("`{x}")).collect::<Vec<_>>().join(",")
    }

    fn statement(rows: &[String], summary: &str) -> String {
        format!("{}\n{}\n{}\n{summary}\n", COLUMNS.join(","), rows.join("\n"), SUMMARY.join(","))
    }

    fn read_all(text: &str) -> Result<(Vec<Line>, Totals), StatementError> {
        let mut r = Reader::new(text.as_bytes(), "10000100")?;
        let mut lines = Vec::new();
        while let Some(l) = r.next_line()? {
            lines.push(l);
        }
        Ok((lines, r.totals()))
    }

    fn good() -> Vec<String> {
        vec![
            row("ch1a1", "SUCCESS", "19.90", "0.00", "0.12000", "10000100"),
            row("ch2a1", "SUCCESS", "5.00", "0.00", "0.03000", "10000100"),
        ]
    }

    #[test]
    fn a_whole_statement_is_read_with_its_amounts_in_fen() {
        let (lines, totals) = read_all(&statement(&good(), "`2,`24.90,`0.00,`0.00,`0.15000,`24.90,`0.00")).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].line, lines[0].out_trade_no.as_str(), lines[0].amount, lines[0].fee),
            (2, "ch1a1", 1_990, 12_000)
        );
        assert_eq!(lines[1].state, "SUCCESS");
        assert_eq!(totals, Totals { trades: 2, amount: 2_490, refunds: 0, fees: 15_000 });
    }

    #[test]
    fn amounts_are_exact_decimals() {
        assert_eq!(parse_amount("19.90", 2), Some(1_990));
        assert_eq!(parse_amount("0.1", 2), Some(10));
        assert_eq!(parse_amount("3", 2), Some(300));
        assert_eq!(parse_amount("0.12000", 5), Some(12_000));
        assert_eq!(parse_amount("-1.50", 2), Some(-150));
        assert_eq!(parse_amount("1.999", 2), None, "more decimals than the scale");
        assert_eq!(parse_amount("1e3", 2), None);
        assert_eq!(parse_amount("", 2), None);
    }

    #[test]
    fn a_bad_statement_is_refused_naming_the_line() {
        let sum = "`2,`24.90,`0.00,`0.00,`0.15000,`24.90,`0.00";
        // Cut short: no summary.
        let cut = format!("{}\n{}\n", COLUMNS.join(","), good().join("\n"));
        let e = read_all(&cut).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("cut short"), "{e}");
        // The summary's total is not the lines'.
        let e = read_all(&statement(&good(), "`2,`25.90,`0.00,`0.00,`0.15000,`25.90,`0.00")).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.problem.starts_with("应结订单总金额 says 2590"), "{e}");
        // A column the format does not have.
        let text = statement(&good(), sum).replacen("费率备注", "优惠标记", 1);
        let e = read_all(&text).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("unknown column \"优惠标记\""), "{e}");
        // Another merchant's line.
        let mut rows = good();
        rows[1] = row("ch2a1", "SUCCESS", "5.00", "0.00", "0.03000", "10000999");
        let e = read_all(&statement(&rows, sum)).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("another merchant"), "{e}");
        // A line short of fields, an amount that is not one, something after the summary.
        let mut rows = good();
        rows[0] = rows[0].rsplitn(2, ',').nth(1).unwrap().to_string();
        assert_eq!(read_all(&statement(&rows, sum)).unwrap_err().line, 2);
        let mut rows = good();
        rows[0] = row("ch1a1", "SUCCESS", "19,90", "0.00", "0.12000", "10000100").replace("`19,90", "`\"19,90\"");
        assert!(read_all(&statement(&rows, sum)).is_err());
        let e = read_all(&format!("{}`extra\n", statement(&good(), sum))).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(read_all("").unwrap_err().problem.contains("empty"));
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let mut w = Writer::new(Vec::new(), "10000100").unwrap();
        let e = Entry {
            time: "2027-01-04 10:00:00".into(),
            out_trade_no: "ch1a1".into(),
            transaction_id: "4200001".into(),
            amount: 1_990,
            fee: 11_940,
            currency: "CNY".into(),
            body: "会员, 月度".into(),
            ..Entry::default()
        };
        w.entry(&e).unwrap();
        w.entry(&Entry { refund: Some(("5030001".into(), "rf_1".into(), 500)), fee: -3_000, ..e.clone() }).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        let (lines, totals) = read_all(&text).unwrap();
        assert_eq!((lines[0].state.as_str(), lines[0].amount, lines[0].fee), ("SUCCESS", 1_990, 11_940));
        assert_eq!(
            (lines[1].state.as_str(), lines[1].refund_amount, lines[1].out_refund_no.as_str()),
            ("REFUND", 500, "rf_1")
        );
        assert_eq!(totals, Totals { trades: 2, amount: 1_990, refunds: 500, fees: 8_940 });
        assert_eq!(format_amount(-3_000, 5), "-0.03000");
    }
}
