//! A one-page PDF of lines of text, Chinese included, made with no font file: the text is set
//! in `STSong-Light`, one of the standard Chinese fonts PDF readers supply themselves, through
//! the predefined `UniGB-UCS2-H` encoding (two bytes per character, its UCS-2 code), and a
//! `ToUnicode` map makes each code its own character, so that the text can be searched and
//! extracted (`pdftotext`) as text. Characters outside the Basic Multilingual Plane become `?`.

/// One line: its height from the bottom of an A4 page in points, its size, and its text.
pub struct Text {
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub text: String,
}

fn ucs2_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 4);
    for c in s.chars() {
        let code = u32::from(c);
        let code = if code > 0xFFFF || (0xD800..=0xDFFF).contains(&code) { u32::from('?') } else { code };
        out.push_str(&format!("{code:04X}"));
    }
    out
}

/// Every two-byte code to the character of the same number, in blocks of at most 100 ranges
/// (the most one `beginbfrange` may hold), each range within one high byte.
fn to_unicode_cmap() -> String {
    let mut s = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    let highs: Vec<u32> = (0..=0xFF).filter(|h| !(0xD8..=0xDF).contains(h)).collect();
    for block in highs.chunks(100) {
        s.push_str(&format!("{} beginbfrange\n", block.len()));
        for h in block {
            s.push_str(&format!("<{h:02X}00> <{h:02X}FF> <{h:02X}00>\n"));
        }
        s.push_str("endbfrange\n");
    }
    s.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    s
}

/// The PDF bytes of one A4 page holding `lines`.
pub fn page(title: &str, lines: &[Text]) -> Vec<u8> {
    let mut content = String::new();
    for l in lines {
        content.push_str(&format!("BT /F1 {} Tf {} {} Td <{}> Tj ET\n", l.size, l.x, l.y, ucs2_hex(&l.text)));
    }
    let cmap = to_unicode_cmap();
    let objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> \
         /Contents 7 0 R >>"
            .into(),
        "<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H \
         /DescendantFonts [5 0 R] /ToUnicode 8 0 R >>"
            .into(),
        "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light \
         /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor 6 0 R /DW 1000 \
         /W [1 95 500] >>"
            .into(),
        "<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [-25 -254 1000 880] \
         /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>"
            .into(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        format!("<< /Length {} >>\nstream\n{cmap}endstream", cmap.len()),
        format!("<< /Title <FEFF{}> /Producer (autodebit) >>", ucs2_hex(title)),
    ];
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info {} 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1,
            objects.len()
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_written_as_ucs2_codes() {
        assert_eq!(ucs2_hex("A收"), "00416536");
        assert_eq!(ucs2_hex("😀"), "003F", "outside the BMP");
    }

    #[test]
    fn the_cross_reference_table_points_at_each_object() {
        let pdf = page("t", &[Text { x: 50, y: 800, size: 12, text: "电子收据".into() }]);
        let text = String::from_utf8_lossy(&pdf);
        let start: usize = text.rsplit("startxref\n").next().unwrap().lines().next().unwrap().parse().unwrap();
        let table = String::from_utf8_lossy(&pdf[start..]);
        assert!(table.starts_with("xref\n0 10\n"), "{table}");
        let offsets: Vec<usize> = table.lines().skip(3).take(9).map(|l| l[..10].parse().unwrap()).collect();
        for (i, off) in offsets.iter().enumerate() {
            assert!(pdf[*off..].starts_with(format!("{} 0 obj", i + 1).as_bytes()), "object {}", i + 1);
        }
        assert!(text.contains("<75355B506536636E>"), "the text's codes");
    }
}
