//! A QR payload rendered for people: PNG (and its `data:` URL), SVG, terminal text.

use base64::Engine;
use image::{ImageEncoder, Luma};
use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// Smallest PNG side in pixels: comfortably scannable by a phone pointed at a screen.
pub const MIN_PNG_SIDE: u32 = 264;
/// Pixels per module when the code would otherwise be drawn smaller (crisp, no blur).
const MODULE_PX: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("payload does not fit in a QR code")]
    Encode(#[from] qrcode::types::QrError),
    #[error("PNG encoding failed")]
    Png(#[from] image::ImageError),
}

/// One payload, encoded once; renders on demand.
pub struct Qr {
    code: QrCode,
}

impl Qr {
    pub fn new(payload: &str) -> Result<Qr, QrError> {
        // Medium error correction: WhatsApp's own codes use it and payloads (~240 bytes) stay small.
        Ok(Qr {
            code: QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)?,
        })
    }

    /// Grayscale PNG with a 4-module quiet zone, at least [`MIN_PNG_SIDE`] px wide.
    pub fn png(&self) -> Result<Vec<u8>, QrError> {
        let img = self
            .code
            .render::<Luma<u8>>()
            .quiet_zone(true)
            .module_dimensions(MODULE_PX, MODULE_PX)
            .min_dimensions(MIN_PNG_SIDE, MIN_PNG_SIDE)
            .build();
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::L8,
        )?;
        Ok(out)
    }

    /// `data:image/png;base64,…`, ready for an `<img src>`.
    pub fn data_url(&self) -> Result<String, QrError> {
        let png = self.png()?;
        Ok(format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ))
    }

    pub fn svg(&self) -> String {
        self.code
            .render::<svg::Color<'_>>()
            .quiet_zone(true)
            .min_dimensions(MIN_PNG_SIDE, MIN_PNG_SIDE)
            .build()
    }

    /// Two rows per line with half blocks: scannable from a terminal with a dark-on-light theme.
    pub fn text(&self) -> String {
        self.code
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Dark)
            .light_color(unicode::Dense1x2::Light)
            .quiet_zone(true)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "2@Yt0Nq3D1y1VfQm2cU1tZp3C3bq8m1bq9eS0x9fE2r5o1o2Qh3bU0L2xH9bXz1w==,\
        xX3cP0m2F0s7l8a9Qx4b1Nq2Wm3Ee4Rr5Tt6Yy7Uu8I=,Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk1Ll2Mm3N=,\
        ZmFrZS1zZWNyZXQta2V5LWZvci10ZXN0cw==";

    fn decode(png: &[u8]) -> String {
        let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_luma8();
        let (w, h) = img.dimensions();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
                img.get_pixel(x as u32, y as u32).0[0]
            });
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().unwrap().1
    }

    #[test]
    fn png_scans_back_to_the_payload() {
        let qr = Qr::new(PAYLOAD).unwrap();
        let png = qr.png().unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert!(img.width() >= MIN_PNG_SIDE && img.width() == img.height());
        assert_eq!(decode(&png), PAYLOAD);
    }

    #[test]
    fn data_url_carries_the_same_png() {
        let qr = Qr::new(PAYLOAD).unwrap();
        let url = qr.data_url().unwrap();
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decode(&png), PAYLOAD);
    }

    #[test]
    fn svg_and_text_render() {
        let qr = Qr::new("2@a,b,c,d").unwrap();
        assert!(qr.svg().starts_with("<?xml") && qr.svg().contains("<svg"));
        let text = qr.text();
        assert!(text.lines().count() > 10 && text.contains('█'));
    }
}
