//! An owned RGB888 framebuffer that `embedded-graphics` draws into.

use std::convert::Infallible;
use std::path::Path;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use image::ImageEncoder;

use super::{write_atomic, DisplayError};

/// Largest side accepted; far above any screen or snapshot, it keeps `x * y * 3` in range.
const MAX_SIDE: u32 = 16_384;

/// An RGB888 image held in memory, allocated once and redrawn in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: u32,
    height: u32,
    /// Row-major RGB bytes, the layout `image::RgbImage` and PNG use, so saving needs no copy.
    rgb: Vec<u8>,
}

impl Canvas {
    /// A black canvas of `width`×`height` pixels (both 1..=16384).
    pub fn new(width: u32, height: u32) -> Result<Self, DisplayError> {
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(DisplayError::input(format!(
                "canvas size {width}×{height} is unusable (each side must be 1..={MAX_SIDE})"
            )));
        }
        Ok(Self {
            width,
            height,
            rgb: vec![0; width as usize * height as usize * 3],
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The whole canvas as a rectangle.
    pub fn area(&self) -> Rectangle {
        Rectangle::new(Point::zero(), Size::new(self.width, self.height))
    }

    /// Row-major RGB bytes (3 per pixel).
    pub fn as_rgb_bytes(&self) -> &[u8] {
        &self.rgb
    }

    /// Fills the canvas with one colour, keeping its buffer.
    pub fn clear(&mut self, color: Rgb888) {
        let c = [color.r(), color.g(), color.b()];
        for px in self.rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&c);
        }
    }

    #[inline]
    fn offset(&self, x: i32, y: i32) -> Option<usize> {
        if x < 0 || y < 0 || x as u32 >= self.width || y as u32 >= self.height {
            return None;
        }
        Some((y as usize * self.width as usize + x as usize) * 3)
    }

    /// The colour at (x, y), or `None` outside the canvas.
    #[inline]
    pub fn pixel(&self, x: i32, y: i32) -> Option<Rgb888> {
        let i = self.offset(x, y)?;
        Some(Rgb888::new(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]))
    }

    /// Sets the colour at (x, y); points outside the canvas are ignored (clipped).
    #[inline]
    pub fn set_pixel(&mut self, x: i32, y: i32, color: Rgb888) {
        if let Some(i) = self.offset(x, y) {
            self.rgb[i] = color.r();
            self.rgb[i + 1] = color.g();
            self.rgb[i + 2] = color.b();
        }
    }

    /// A copy as an `image` RGB image.
    pub fn to_rgb_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width, self.height, self.rgb.clone())
            .expect("canvas buffer matches its dimensions")
    }

    /// The canvas encoded as PNG bytes; `path` only names the file in errors.
    pub fn encode_png(&self, path: &Path) -> Result<Vec<u8>, DisplayError> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &self.rgb,
                self.width,
                self.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|source| DisplayError::Png {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    }

    /// Writes the canvas as a PNG file, atomically (through `<path>.tmp` and a rename).
    pub fn save_png(&self, path: &Path) -> Result<(), DisplayError> {
        let bytes = self.encode_png(path)?;
        write_atomic(path, &bytes)
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            self.set_pixel(p.x, p.y, c);
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        // Text backgrounds and panels are filled often; rows are contiguous, so skip per-pixel
        // bounds checks.
        let area = area.intersection(&self.area());
        let Some(br) = area.bottom_right() else {
            return Ok(());
        };
        let c = [color.r(), color.g(), color.b()];
        let w = self.width as usize;
        for y in area.top_left.y..=br.y {
            let row = y as usize * w;
            let start = (row + area.top_left.x as usize) * 3;
            let end = (row + br.x as usize + 1) * 3;
            for px in self.rgb[start..end].chunks_exact_mut(3) {
                px.copy_from_slice(&c);
            }
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        Canvas::clear(self, color);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::primitives::{Line, PrimitiveStyle};

    #[test]
    fn rejects_empty_and_absurd_sizes() {
        assert!(Canvas::new(0, 10).is_err());
        assert!(Canvas::new(10, 0).is_err());
        assert!(Canvas::new(MAX_SIDE + 1, 1).is_err());
        let c = Canvas::new(3, 2).unwrap();
        assert_eq!((c.width(), c.height(), c.as_rgb_bytes().len()), (3, 2, 18));
        assert_eq!(c.size(), Size::new(3, 2));
    }

    #[test]
    fn primitives_draw_and_clip_without_panicking() {
        let mut c = Canvas::new(8, 6).unwrap();
        let red = Rgb888::new(255, 0, 0);
        // Half outside on every side: must clip, not panic.
        Rectangle::new(Point::new(-4, -4), Size::new(20, 20))
            .into_styled(PrimitiveStyle::with_stroke(red, 1))
            .draw(&mut c)
            .unwrap();
        Rectangle::new(Point::new(2, 1), Size::new(3, 2))
            .into_styled(PrimitiveStyle::with_fill(red))
            .draw(&mut c)
            .unwrap();
        for y in 0..6 {
            for x in 0..8 {
                let inside = (2..5).contains(&x) && (1..3).contains(&y);
                let want = if inside { red } else { Rgb888::BLACK };
                assert_eq!(c.pixel(x, y), Some(want), "({x}, {y})");
            }
        }
        Line::new(Point::new(-10, 5), Point::new(20, 5))
            .into_styled(PrimitiveStyle::with_stroke(Rgb888::WHITE, 1))
            .draw(&mut c)
            .unwrap();
        assert_eq!(c.pixel(0, 5), Some(Rgb888::WHITE));
        assert_eq!(c.pixel(7, 5), Some(Rgb888::WHITE));
        assert_eq!(c.pixel(8, 5), None);
        assert_eq!(c.pixel(-1, 0), None);
    }

    #[test]
    fn clear_reuses_the_buffer() {
        let mut c = Canvas::new(4, 4).unwrap();
        let before = c.as_rgb_bytes().as_ptr();
        c.clear(Rgb888::new(1, 2, 3));
        DrawTarget::clear(&mut c, Rgb888::new(1, 2, 3)).unwrap();
        assert_eq!(c.as_rgb_bytes().as_ptr(), before);
        assert!(c.as_rgb_bytes().chunks(3).all(|p| p == [1, 2, 3]));
    }

    #[test]
    fn png_round_trips_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Canvas::new(5, 4).unwrap();
        c.set_pixel(1, 2, Rgb888::new(10, 200, 30));
        let p = dir.path().join("c.png");
        c.save_png(&p).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (5, 4));
        assert_eq!(back.get_pixel(1, 2).0, [10, 200, 30]);
        assert_eq!(back.as_raw(), c.to_rgb_image().as_raw());
        assert!(!dir.path().join("c.png.tmp").exists());
        let bad = dir.path().join("no-such-dir").join("c.png");
        let e = c.save_png(&bad).unwrap_err().to_string();
        assert!(e.contains("no-such-dir"), "{e}");
    }
}
