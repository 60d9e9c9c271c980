//! Linux framebuffer output (`/dev/fb*`), for boards that drive a panel without a compositor.
//!
//! The pixel conversion ([`PixelLayout`], [`convert_row`]) is plain code, always built and
//! tested; the device itself (`Framebuffer`, ioctl and mmap through `libc`) needs the
//! `fbdev` feature.

/// Where one colour channel sits in a device pixel (as in the kernel's `fb_bitfield`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Bit position of the channel's least significant bit.
    pub offset: u32,
    /// Bits in the channel (0: absent, at most 8).
    pub length: u32,
}

/// A packed true-colour pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLayout {
    /// Bytes per pixel: 2, 3 or 4.
    pub bytes_per_pixel: usize,
    /// Red channel.
    pub red: Channel,
    /// Green channel.
    pub green: Channel,
    /// Blue channel.
    pub blue: Channel,
    /// Alpha (transparency) channel, set opaque; length 0 when absent.
    pub alpha: Channel,
}

const fn ch(offset: u32, length: u32) -> Channel {
    Channel { offset, length }
}

impl PixelLayout {
    /// 16-bit RGB565, the usual format of small SPI/parallel panels.
    pub const RGB565: Self = Self {
        bytes_per_pixel: 2,
        red: ch(11, 5),
        green: ch(5, 6),
        blue: ch(0, 5),
        alpha: ch(0, 0),
    };
    /// 32-bit XRGB8888 (bytes B, G, R, X in memory on little-endian), the usual HDMI format.
    pub const XRGB8888: Self = Self {
        bytes_per_pixel: 4,
        red: ch(16, 8),
        green: ch(8, 8),
        blue: ch(0, 8),
        alpha: ch(0, 0),
    };

    /// A layout from a device's bits per pixel and channel fields, checking that it is a
    /// packed format this module can write.
    pub fn new(
        bits_per_pixel: u32,
        red: Channel,
        green: Channel,
        blue: Channel,
        alpha: Channel,
    ) -> Result<Self, String> {
        if !matches!(bits_per_pixel, 16 | 24 | 32) {
            return Err(format!(
                "{bits_per_pixel} bits per pixel is not supported (16, 24 or 32 only)"
            ));
        }
        for (name, c, min) in [
            ("red", red, 1),
            ("green", green, 1),
            ("blue", blue, 1),
            ("alpha", alpha, 0),
        ] {
            if c.length < min || c.length > 8 || c.offset + c.length > bits_per_pixel {
                return Err(format!(
                    "{name} channel ({} bits at bit {}) does not fit a {bits_per_pixel}-bit pixel",
                    c.length, c.offset
                ));
            }
        }
        Ok(Self {
            bytes_per_pixel: bits_per_pixel as usize / 8,
            red,
            green,
            blue,
            alpha,
        })
    }

    /// One RGB888 colour as a device pixel value (the low `bytes_per_pixel` bytes count).
    #[inline]
    pub fn pack(&self, r: u8, g: u8, b: u8) -> u32 {
        // Keep the high bits: truncation, as the kernel's own console does.
        let put = |v: u8, c: Channel| {
            if c.length == 0 {
                0
            } else {
                (u32::from(v) >> (8 - c.length)) << c.offset
            }
        };
        put(r, self.red) | put(g, self.green) | put(b, self.blue) | put(0xff, self.alpha)
    }
}

/// Converts a row of RGB888 bytes into device pixels in native byte order; converts as many
/// pixels as both buffers hold.
pub fn convert_row(rgb: &[u8], layout: &PixelLayout, out: &mut [u8]) {
    let bpp = layout.bytes_per_pixel;
    for (src, dst) in rgb.chunks_exact(3).zip(out.chunks_exact_mut(bpp)) {
        let v = layout.pack(src[0], src[1], src[2]);
        match bpp {
            2 => dst.copy_from_slice(&(v as u16).to_ne_bytes()),
            4 => dst.copy_from_slice(&v.to_ne_bytes()),
            _ if cfg!(target_endian = "little") => dst.copy_from_slice(&v.to_le_bytes()[..3]),
            _ => dst.copy_from_slice(&v.to_be_bytes()[1..]),
        }
    }
}

#[cfg(all(feature = "fbdev", not(target_os = "linux")))]
compile_error!("the `fbdev` feature needs Linux (/dev/fb* and its ioctls)");

#[cfg(feature = "fbdev")]
pub use device::Framebuffer;

#[cfg(feature = "fbdev")]
mod device {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    use std::path::{Path, PathBuf};

    use super::{convert_row, Channel, PixelLayout};
    use crate::display::{Canvas, DisplayError};

    // From <linux/fb.h>.
    const FBIOGET_VSCREENINFO: u32 = 0x4600;
    const FBIOGET_FSCREENINFO: u32 = 0x4602;
    const FB_TYPE_PACKED_PIXELS: u32 = 0;
    const FB_VISUAL_TRUECOLOR: u32 = 2;
    const FB_VISUAL_DIRECTCOLOR: u32 = 4;

    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    struct FbBitfield {
        offset: u32,
        length: u32,
        msb_right: u32,
    }

    #[repr(C)]
    #[derive(Debug, Default)]
    struct FbVarScreeninfo {
        xres: u32,
        yres: u32,
        xres_virtual: u32,
        yres_virtual: u32,
        xoffset: u32,
        yoffset: u32,
        bits_per_pixel: u32,
        grayscale: u32,
        red: FbBitfield,
        green: FbBitfield,
        blue: FbBitfield,
        transp: FbBitfield,
        nonstd: u32,
        activate: u32,
        height: u32,
        width: u32,
        accel_flags: u32,
        pixclock: u32,
        left_margin: u32,
        right_margin: u32,
        upper_margin: u32,
        lower_margin: u32,
        hsync_len: u32,
        vsync_len: u32,
        sync: u32,
        vmode: u32,
        rotate: u32,
        colorspace: u32,
        reserved: [u32; 4],
    }

    #[repr(C)]
    #[derive(Debug, Default)]
    struct FbFixScreeninfo {
        id: [libc::c_char; 16],
        smem_start: libc::c_ulong,
        smem_len: u32,
        type_: u32,
        type_aux: u32,
        visual: u32,
        xpanstep: u16,
        ypanstep: u16,
        ywrapstep: u16,
        line_length: u32,
        mmio_start: libc::c_ulong,
        mmio_len: u32,
        accel: u32,
        capabilities: u16,
        reserved: [u16; 2],
    }

    /// The device's memory, mapped when the driver allows it, else written with `pwrite`.
    #[derive(Debug)]
    enum Memory {
        Mapped { ptr: *mut u8, len: usize },
        Written,
    }

    /// An open Linux framebuffer device.
    #[derive(Debug)]
    pub struct Framebuffer {
        path: PathBuf,
        file: File,
        width: u32,
        height: u32,
        layout: PixelLayout,
        line_length: usize,
        /// Byte offset of the visible area's first pixel (panned displays start elsewhere).
        start: usize,
        memory: Memory,
        row: Vec<u8>,
        warned_size: bool,
    }

    // SAFETY: the mapping is owned by this value alone and only touched through `&mut self`.
    unsafe impl Send for Framebuffer {}

    fn channel(b: FbBitfield) -> Channel {
        Channel {
            offset: b.offset,
            length: b.length,
        }
    }

    impl Framebuffer {
        /// Opens a framebuffer device such as `/dev/fb0` and reads its geometry and format.
        pub fn open(path: impl AsRef<Path>) -> Result<Self, DisplayError> {
            let path = path.as_ref();
            let device = |detail: String| DisplayError::Device {
                path: path.to_path_buf(),
                detail,
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| DisplayError::io(path, e))?;
            let fd = file.as_raw_fd();
            let mut var = FbVarScreeninfo::default();
            let mut fix = FbFixScreeninfo::default();
            // SAFETY: both requests fill exactly the #[repr(C)] <linux/fb.h> struct passed.
            if unsafe {
                libc::ioctl(
                    fd,
                    FBIOGET_VSCREENINFO as _,
                    &mut var as *mut FbVarScreeninfo,
                )
            } < 0
            {
                return Err(device(format!(
                    "FBIOGET_VSCREENINFO failed ({}); is it a framebuffer device?",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: as above.
            if unsafe {
                libc::ioctl(
                    fd,
                    FBIOGET_FSCREENINFO as _,
                    &mut fix as *mut FbFixScreeninfo,
                )
            } < 0
            {
                return Err(device(format!(
                    "FBIOGET_FSCREENINFO failed ({})",
                    std::io::Error::last_os_error()
                )));
            }
            if fix.type_ != FB_TYPE_PACKED_PIXELS
                || !matches!(fix.visual, FB_VISUAL_TRUECOLOR | FB_VISUAL_DIRECTCOLOR)
            {
                return Err(device(format!(
                    "unsupported framebuffer type {} / visual {} (packed true colour only)",
                    fix.type_, fix.visual
                )));
            }
            if [var.red, var.green, var.blue]
                .iter()
                .any(|b| b.msb_right != 0)
            {
                return Err(device(
                    "bit-reversed colour channels are not supported".into(),
                ));
            }
            let layout = PixelLayout::new(
                var.bits_per_pixel,
                channel(var.red),
                channel(var.green),
                channel(var.blue),
                channel(var.transp),
            )
            .map_err(device)?;
            let bpp = layout.bytes_per_pixel;
            let line_length = fix.line_length as usize;
            let (width, height) = (var.xres, var.yres);
            let start = var.yoffset as usize * line_length + var.xoffset as usize * bpp;
            let end =
                start + height.saturating_sub(1) as usize * line_length + width as usize * bpp;
            if width == 0
                || height == 0
                || line_length < width as usize * bpp
                || end > fix.smem_len as usize
            {
                return Err(device(format!(
                    "inconsistent geometry: {width}×{height} at {bpp} bytes/pixel, {line_length} bytes/line, {} bytes of memory",
                    fix.smem_len
                )));
            }
            let len = fix.smem_len as usize;
            // SAFETY: a fresh shared mapping of the device's memory; checked for MAP_FAILED.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            let memory = if ptr == libc::MAP_FAILED {
                // Some drivers (e.g. a few DRM fbdev emulations on boot) refuse mmap; writes work.
                log::warn!(
                    "{}: mmap failed ({}); writing rows with pwrite instead",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                Memory::Written
            } else {
                Memory::Mapped {
                    ptr: ptr.cast(),
                    len,
                }
            };
            log::info!(
                "{}: {width}×{height}, {} bits/pixel, {line_length} bytes/line",
                path.display(),
                var.bits_per_pixel
            );
            Ok(Self {
                path: path.to_path_buf(),
                file,
                width,
                height,
                layout,
                line_length,
                start,
                memory,
                row: vec![0; width as usize * bpp],
                warned_size: false,
            })
        }

        /// Visible width in pixels.
        pub fn width(&self) -> u32 {
            self.width
        }

        /// Visible height in pixels.
        pub fn height(&self) -> u32 {
            self.height
        }

        /// The device's pixel format.
        pub fn layout(&self) -> &PixelLayout {
            &self.layout
        }

        /// Copies `canvas` to the screen's top-left corner, cropped to the screen (make the
        /// canvas the screen's size to fill it).
        pub fn present(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
            if !self.warned_size && (canvas.width(), canvas.height()) != (self.width, self.height) {
                log::warn!(
                    "{}: canvas {}×{} drawn on a {}×{} screen (cropped or not filling it)",
                    self.path.display(),
                    canvas.width(),
                    canvas.height(),
                    self.width,
                    self.height
                );
                self.warned_size = true;
            }
            let w = canvas.width().min(self.width) as usize;
            let h = canvas.height().min(self.height) as usize;
            let bpp = self.layout.bytes_per_pixel;
            let src_stride = canvas.width() as usize * 3;
            let rgb = canvas.as_rgb_bytes();
            for y in 0..h {
                let src = &rgb[y * src_stride..y * src_stride + w * 3];
                let row = &mut self.row[..w * bpp];
                convert_row(src, &self.layout, row);
                let at = self.start + y * self.line_length;
                match self.memory {
                    Memory::Mapped { ptr, len } => {
                        // `open` checked that every visible row lies inside the mapping.
                        debug_assert!(at + row.len() <= len);
                        // SAFETY: [at, at + row.len()) is inside the live mapping of `len` bytes.
                        unsafe {
                            std::ptr::copy_nonoverlapping(row.as_ptr(), ptr.add(at), row.len())
                        };
                    }
                    Memory::Written => self
                        .file
                        .write_all_at(row, at as u64)
                        .map_err(|e| DisplayError::io(&self.path, e))?,
                }
            }
            Ok(())
        }
    }

    impl Drop for Framebuffer {
        fn drop(&mut self) {
            if let Memory::Mapped { ptr, len } = self.memory {
                // SAFETY: unmaps exactly the mapping made in `open`, once.
                unsafe { libc::munmap(ptr.cast(), len) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn kernel_struct_sizes_match_linux_fb_h() {
            assert_eq!(std::mem::size_of::<FbVarScreeninfo>(), 160);
            let fix = if cfg!(target_pointer_width = "64") {
                80
            } else {
                68
            };
            assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), fix);
        }

        #[test]
        fn errors_name_the_device() {
            let e = Framebuffer::open("/nonexistent/fb9")
                .unwrap_err()
                .to_string();
            assert!(e.contains("/nonexistent/fb9"), "{e}");
            let f = tempfile::NamedTempFile::new().unwrap();
            let e = Framebuffer::open(f.path()).unwrap_err().to_string();
            assert!(
                e.contains(&*f.path().to_string_lossy()) && e.contains("FBIOGET_VSCREENINFO"),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb565_packs_the_high_bits() {
        let l = PixelLayout::RGB565;
        assert_eq!(l.pack(255, 0, 0), 0xF800);
        assert_eq!(l.pack(0, 255, 0), 0x07E0);
        assert_eq!(l.pack(0, 0, 255), 0x001F);
        assert_eq!(l.pack(255, 255, 255), 0xFFFF);
        assert_eq!(l.pack(0x84, 0x82, 0x08), (0x10 << 11) | (0x20 << 5) | 0x01);
        let mut out = [0u8; 4];
        convert_row(&[255, 0, 0, 0, 0, 255], &l, &mut out);
        assert_eq!(out[..2], 0xF800u16.to_ne_bytes());
        assert_eq!(out[2..], 0x001Fu16.to_ne_bytes());
    }

    #[test]
    fn thirty_two_bit_layouts_with_and_without_alpha() {
        assert_eq!(PixelLayout::XRGB8888.pack(0x12, 0x34, 0x56), 0x0012_3456);
        let argb = PixelLayout::new(32, ch(16, 8), ch(8, 8), ch(0, 8), ch(24, 8)).unwrap();
        assert_eq!(argb.pack(0x12, 0x34, 0x56), 0xFF12_3456);
        let abgr = PixelLayout::new(32, ch(0, 8), ch(8, 8), ch(16, 8), ch(24, 8)).unwrap();
        assert_eq!(abgr.pack(0x12, 0x34, 0x56), 0xFF56_3412);
        let mut out = [0u8; 8];
        convert_row(&[1, 2, 3, 4, 5, 6], &PixelLayout::XRGB8888, &mut out);
        assert_eq!(out[..4], 0x0001_0203u32.to_ne_bytes());
        assert_eq!(out[4..], 0x0004_0506u32.to_ne_bytes());
    }

    #[test]
    fn twenty_four_bit_and_short_buffers() {
        let rgb24 = PixelLayout::new(24, ch(16, 8), ch(8, 8), ch(0, 8), ch(0, 0)).unwrap();
        let mut out = [0u8; 3];
        // Two source pixels, room for one: converts one, no panic.
        convert_row(&[0xAA, 0xBB, 0xCC, 1, 2, 3], &rgb24, &mut out);
        if cfg!(target_endian = "little") {
            assert_eq!(out, [0xCC, 0xBB, 0xAA]);
        }
    }

    #[test]
    fn unsupported_layouts_are_rejected() {
        assert!(PixelLayout::new(8, ch(5, 3), ch(2, 3), ch(0, 2), ch(0, 0)).is_err());
        assert!(PixelLayout::new(16, ch(11, 5), ch(5, 6), ch(0, 0), ch(0, 0)).is_err());
        assert!(PixelLayout::new(16, ch(12, 5), ch(5, 6), ch(0, 5), ch(0, 0)).is_err());
        assert!(PixelLayout::new(32, ch(16, 10), ch(8, 8), ch(0, 8), ch(0, 0)).is_err());
        let l = PixelLayout::new(16, ch(11, 5), ch(5, 6), ch(0, 5), ch(0, 0)).unwrap();
        assert_eq!(l, PixelLayout::RGB565);
    }
}
