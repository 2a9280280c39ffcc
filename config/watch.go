package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is the quiet period a Watcher waits for when its Debounce
// is zero.
const DefaultDebounce = 200 * time.Millisecond

// Watcher loads configuration and loads it again whenever its files change.
// Configure it by setting the fields, then call Run once; the fields must not
// change while Run is running.
type Watcher struct {
	// Paths are the files and directories to load, as for Load.
	Paths []string

	// Logger receives a line at Info for each reload applied and a line at
	// Error for each problem of a reload that failed. Nil means
	// slog.Default().
	Logger *slog.Logger

	// OnChange receives the first snapshot and then every reloaded snapshot
	// whose files differ from the last one applied. It is called from Run's
	// goroutine, one call at a time, and Run waits for it to return. Nil
	// means nobody is told (the load is still validated).
	OnChange func(*Snapshot)

	// Debounce is how long the files must stay unchanged after an event
	// before they are read again, so that an editor's or the kubelet's burst
	// of writes causes a single reload. Zero means DefaultDebounce.
	Debounce time.Duration
}

// Run loads the configuration and returns the error if that fails. Otherwise
// it calls OnChange with the snapshot, then watches the files and reloads
// them after each change: a snapshot that loads is passed to OnChange, one
// that does not is logged and the previous one stays in force. Run returns
// nil once ctx is done, or an error if the files cannot be watched.
//
// Each file's parent directory is watched rather than the file itself, so that
// a file replaced by rename (as editors save) and a Kubernetes ConfigMap
// volume, whose "..data" link is swapped on update, are both seen.
func (w *Watcher) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	debounce := w.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}

	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch: %w", err)
	}
	defer fw.Close()

	// Watch before the first load, so that a change made while it reads is
	// not missed.
	dirs := watchSet{}
	watchErr := dirs.update(fw, w.Paths)
	snap, digest, err := load(w.Paths)
	if err != nil {
		return err
	}
	if watchErr != nil {
		return watchErr
	}
	logLoaded(log, "config loaded", snap)
	w.notify(snap)

	timer := time.NewTimer(debounce)
	timer.Stop()
	var pending <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("config: watch: file watcher closed")
			}
			if dirs.relevant(ev.Name) {
				log.Debug("config file changed", "file", ev.Name, "op", ev.Op.String())
				timer.Reset(debounce)
				pending = timer.C
			}

		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("config: watch: file watcher closed")
			}
			log.Warn("config file watcher error", "err", err)

		case <-pending:
			pending = nil
			// A swapped ConfigMap or a link that now points elsewhere may
			// need other directories watched.
			if err := dirs.update(fw, w.Paths); err != nil {
				log.Warn("config file watcher error", "err", err)
			}
			next, nextDigest, err := load(w.Paths)
			if err != nil {
				logFailure(log, err)
				continue
			}
			if nextDigest == digest {
				log.Debug("config files unchanged")
				continue
			}
			digest = nextDigest
			logLoaded(log, "config reloaded", next)
			w.notify(next)
		}
	}
}

func (w *Watcher) notify(s *Snapshot) {
	if w.OnChange != nil {
		w.OnChange(s)
	}
}

func logLoaded(log *slog.Logger, msg string, s *Snapshot) {
	log.Info(msg, "brokers", len(s.Brokers), "triggers", len(s.Triggers), "sensors", len(s.Sensors))
}

// logFailure logs each problem of a failed reload on its own line.
func logFailure(log *slog.Logger, err error) {
	var list ErrorList
	if !errors.As(err, &list) {
		log.Error("config reload failed; keeping the previous configuration", "err", err)
		return
	}
	for _, e := range list {
		log.Error("config reload failed; keeping the previous configuration",
			"file", e.File, "line", e.Line, "object", e.Object, "field", e.Field, "err", e.Msg)
	}
}

// watchSet is the directories being watched and, for each, which entries in
// it matter: all of them for a directory given to Load, otherwise the names
// of the files given and Kubernetes' "..data"-style entries.
type watchSet map[string]*watchedDir

type watchedDir struct {
	all   bool
	names map[string]bool
}

// update computes the directories paths need and adds the missing ones to
// fw. A file that is a link is also watched where it points, so an edit of
// the target in place is seen.
func (s watchSet) update(fw *fsnotify.Watcher, paths []string) error {
	want := watchSet{}
	for _, p := range paths {
		p = filepath.Clean(p)
		if info, err := os.Stat(p); err == nil && info.IsDir() {
			want.add(p, "")
			continue
		}
		want.add(filepath.Dir(p), filepath.Base(p))
		if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
			want.add(filepath.Dir(real), filepath.Base(real))
		}
	}

	for dir := range s {
		if want[dir] == nil {
			_ = fw.Remove(dir) // fails harmlessly if the directory is gone
			delete(s, dir)
		}
	}
	// Adding a directory already watched is harmless, and adding it again
	// covers one that was removed and created anew (the watch dies with it).
	var errs []error
	for dir, wd := range want {
		if err := fw.Add(dir); err != nil {
			errs = append(errs, fmt.Errorf("config: watch %s: %w", dir, err))
			continue
		}
		s[dir] = wd
	}
	return errors.Join(errs...)
}

// add records that dir must be watched for name, or for every entry when
// name is empty.
func (s watchSet) add(dir, name string) {
	wd := s[dir]
	if wd == nil {
		wd = &watchedDir{names: map[string]bool{}}
		s[dir] = wd
	}
	if name == "" {
		wd.all = true
	} else {
		wd.names[name] = true
	}
}

// relevant reports whether an event on path may change the configuration.
func (s watchSet) relevant(path string) bool {
	wd := s[filepath.Dir(path)]
	if wd == nil {
		return false
	}
	base := filepath.Base(path)
	return wd.all || wd.names[base] || strings.HasPrefix(base, "..")
}
