package store

import (
	"errors"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/wire"
)

// batchTree is a stored receipt batch (its leaves and signature) with its
// Merkle tree (wire.ReceiptTree, SPEC.md §6.2): each entry's inclusion path
// is rebuilt from it on read, so entries do not store their paths.
type batchTree struct {
	rec  batchRec
	tree *wire.ReceiptTree
}

func newBatchTree(rec batchRec) (*batchTree, error) {
	t, err := wire.NewReceiptTree(rec.leaves)
	if err != nil {
		return nil, err
	}
	return &batchTree{rec: rec, tree: t}, nil
}

// path returns the inclusion path of leaf m.
func (t *batchTree) path(m int) [][32]byte { return t.tree.Path(m) }

// treeCache keeps recently read batch trees, fully built (so they are
// read-only and shared by concurrent readers). A sync of consecutive
// entries reads each batch once.
type treeCache struct {
	mu    sync.Mutex
	trees map[uint64]*batchTree
	order []uint64 // FIFO of cached ids
}

const treeCacheSize = 64

// get returns the tree of batch id, reading it through txn on a miss. k is
// the key of the entry that needs it (for errors).
func (c *treeCache) get(txn *badger.Txn, id uint64, k []byte) (*batchTree, error) {
	c.mu.Lock()
	t := c.trees[id]
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	bk := batchKey(id)
	item, err := txn.Get(bk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, corrupt(k, "receipt batch %d missing", id)
	}
	if err != nil {
		return nil, err
	}
	var rec batchRec
	if err := item.Value(func(v []byte) error {
		var err error
		rec, err = decodeBatch(bk, v)
		return err
	}); err != nil {
		return nil, err
	}
	if t, err = newBatchTree(rec); err != nil {
		return nil, corrupt(k, "receipt batch %d: %v", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trees == nil {
		c.trees = make(map[uint64]*batchTree)
	}
	if _, ok := c.trees[id]; !ok {
		if len(c.order) >= treeCacheSize {
			delete(c.trees, c.order[0])
			c.order = c.order[1:]
		}
		c.trees[id] = t
		c.order = append(c.order, id)
	}
	return t, nil
}
