package client

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// kv is the small storage interface the client's logic is written against:
// transactions over ordered keys. kvBadger implements it on badger/v4 with
// synchronous writes and at-rest encryption. Every multi-key change the
// client makes (a page of messages with the sessions they advanced, the
// prekey state a new session consumed, the conversations' counter state,
// the CIDs marked seen and the cursor advance) is one update call: all or
// nothing, one fsync.
//
// Package store's client API (store.OpenClient) does not fit yet: each of
// its methods is its own transaction, StoreReceived takes one entry (one
// fsync per message, where a page must be one), and it has no place, in the
// same transaction, for the identity/prekey state Respond changes, the
// per-conversation counter state, the contact's next counter that Enqueue's
// session used, or entries kept pending. When it offers a transaction that
// spans those records (or batch variants of them), kvBadger can be replaced
// behind this interface.
type kv interface {
	update(fn func(tx kvTx) error) error
	view(fn func(tx kvTx) error) error
	close() error
}

// kvTx is one transaction. Values returned by get and passed to scan's
// callback are copies the caller may keep.
type kvTx interface {
	get(key []byte) ([]byte, error) // errNotFound if absent
	set(key, val []byte) error
	// setTTL stores a value that disappears after ttl.
	setTTL(key, val []byte, ttl time.Duration) error
	del(key []byte) error
	// scan calls fn for every key with the prefix, in key order.
	scan(prefix []byte, fn func(k, v []byte) error) error
}

var errNotFound = errors.New("client: not found")

type kvBadger struct{ db *badger.DB }

func openBadger(dir string, key []byte, logger *slog.Logger) (*kvBadger, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{logger}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithBlockCacheSize(8 << 20).
		WithNumCompactors(2).
		WithValueThreshold(4 << 10)
	if dir == "" {
		opts = opts.WithInMemory(true).WithDir("").WithValueDir("")
	}
	if len(key) > 0 {
		opts = opts.WithEncryptionKey(key).WithIndexCacheSize(4 << 20)
		if dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("open store: %w", err)
			}
			// Check the key first: badger.Open leaks a goroutine when
			// it fails on a wrong key (badger v4.9.6).
			kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: dir, EncryptionKey: key,
				EncryptionKeyRotationDuration: opts.EncryptionKeyRotationDuration})
			if err != nil {
				return nil, fmt.Errorf("open store: %w", err)
			}
			if err := kr.Close(); err != nil {
				return nil, fmt.Errorf("open store: %w", err)
			}
		}
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &kvBadger{db: db}, nil
}

func (k *kvBadger) update(fn func(tx kvTx) error) error {
	return k.db.Update(func(txn *badger.Txn) error { return fn(badgerTx{txn}) })
}

func (k *kvBadger) view(fn func(tx kvTx) error) error {
	return k.db.View(func(txn *badger.Txn) error { return fn(badgerTx{txn}) })
}

func (k *kvBadger) close() error { return k.db.Close() }

type badgerTx struct{ txn *badger.Txn }

func (t badgerTx) get(key []byte) ([]byte, error) {
	it, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}

func (t badgerTx) set(key, val []byte) error { return t.txn.Set(key, val) }

func (t badgerTx) setTTL(key, val []byte, ttl time.Duration) error {
	return t.txn.SetEntry(badger.NewEntry(key, val).WithTTL(ttl))
}

func (t badgerTx) del(key []byte) error { return t.txn.Delete(key) }

func (t badgerTx) scan(prefix []byte, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := t.txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(bytes.Clone(item.Key()), v); err != nil {
			return err
		}
	}
	return nil
}

// badgerLogger sends badger's messages to the client's logger at debug
// level (warnings and errors at their own level).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf("badger: "+f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf("badger: "+f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf("badger: "+f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(fmt.Sprintf("badger: "+f, a...)) }
