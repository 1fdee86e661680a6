package vmrun

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// File is a file added to the initramfs on top of the cached guest tree.
// Exactly one of Src (a host path) and Data is used.
type File struct {
	Name string // path inside the guest, without the leading slash
	Mode fs.FileMode
	Src  string
	Data []byte
}

// WriteInitramfs writes a cpio (newc) archive: the tree under root, then the extra
// files (which replace tree entries of the same name), plus /dev/console so /init
// has a console before devtmpfs is mounted. Like `(cd root && find . | cpio -o -H
// newc)`, without needing root for mknod. It is not compressed: qemu loads it
// straight into guest memory, and inflating it under TCG cost seconds of boot.
func WriteInitramfs(out, root string, extra []File) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := &cpioWriter{w: bw, dirs: map[string]bool{".": true}}
	extra = withFlanneld(extra)
	replaced := map[string]bool{}
	for _, e := range extra {
		replaced[e.Name] = true
	}
	if err := cw.tree(root, replaced); err != nil {
		return err
	}
	for _, e := range extra {
		if err := cw.extra(e); err != nil {
			return fmt.Errorf("adding %s: %w", e.Name, err)
		}
	}
	cw.mkdirAll("dev")
	cw.header("dev/console", 0o020600, 0, 5, 1)
	if err := cw.close(); err != nil {
		return err
	}
	return bw.Flush()
}

// GuestFlanneld is where the guest finds flanneld, the real Flannel agent
// (guest.FlanneldBin), in an image that gives it an apiserver.
const GuestFlanneld = "/bin/flanneld"

// FlanneldBinary is where test/tools/build.sh leaves flanneld, linked
// statically: $KIPVS_CACHE/bin/flanneld.
func FlanneldBinary() string { return filepath.Join(CacheRoot(), "bin", "flanneld") }

// withFlanneld is extra plus FlanneldBinary at GuestFlanneld when extra
// gives the guest an apiserver (GuestAdminKubeconfig: the e2e suite and
// the demo), which flanneld's kube subnet manager needs, and the tools
// cache has it; otherwise extra unchanged. A guest without it fails the
// Flannel tests, naming the build script.
func withFlanneld(extra []File) []File {
	name, api := GuestFlanneld[1:], false
	for _, e := range extra {
		if e.Name == name {
			return extra
		}
		api = api || e.Name == GuestAdminKubeconfig[1:]
	}
	if _, err := os.Stat(FlanneldBinary()); !api || err != nil {
		return extra
	}
	return append(extra[:len(extra):len(extra)], File{Name: name, Mode: 0o755, Src: FlanneldBinary()})
}

// cpioWriter writes "newc" entries; the first error sticks and is returned by close.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int64) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// header writes one entry header and name; the caller then writes size bytes of data.
func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32) {
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(h))
	c.write(append([]byte(name), 0))
	c.pad(int64(len(h) + len(name) + 1))
}

func (c *cpioWriter) mkdirAll(dir string) {
	if c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.dirs[dir] = true
	c.header(dir, 0o040755, 0, 0, 0)
}

func (c *cpioWriter) data(name string, perm fs.FileMode, src io.Reader, size int64) {
	c.mkdirAll(path.Dir(name))
	c.header(name, 0o100000|uint32(perm.Perm()), size, 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, src)
	if err == nil && n != size {
		err = fmt.Errorf("%s: wrote %d of %d bytes", name, n, size)
	}
	if err != nil {
		c.err = err
		return
	}
	c.pad(size)
}

func (c *cpioWriter) symlink(name, target string) {
	c.mkdirAll(path.Dir(name))
	c.header(name, 0o120777, int64(len(target)), 0, 0)
	c.write([]byte(target))
	c.pad(int64(len(target)))
}

func (c *cpioWriter) file(name string, perm fs.FileMode, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c.data(name, perm, f, st.Size())
	return c.err
}

func (c *cpioWriter) extra(e File) error {
	if e.Src != "" {
		return c.file(e.Name, e.Mode, e.Src)
	}
	c.data(e.Name, e.Mode, strings.NewReader(string(e.Data)), int64(len(e.Data)))
	return c.err
}

// tree adds every directory, regular file and symlink under root, skipping names in skip.
func (c *cpioWriter) tree(root string, skip map[string]bool) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || skip[filepath.ToSlash(rel)] {
			return err
		}
		name := filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t.IsDir():
			c.mkdirAll(name)
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.symlink(name, target)
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return c.file(name, info.Mode(), p)
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, t)
		}
		return c.err
	})
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
