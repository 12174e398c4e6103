package wire

// Domain labels of every hash and signature this package defines (SPEC.md
// §1). The input of each is label ‖ 0x00 ‖ data. A new construction gets a
// new label; these never change meaning.
const (
	LabelReceipt     = "cairn/v1/receipt"
	LabelAck         = "cairn/v1/ack"
	LabelAuth        = "cairn/v1/auth"
	LabelPostage     = "cairn/v1/postage"
	LabelInvite      = "cairn/v1/invite"
	LabelFingerprint = "cairn/v1/fp"
	LabelSummary     = "cairn/v1/summary"
)

// labelled returns label ‖ 0x00, ready to be followed by data.
func labelled(label string) []byte {
	b := make([]byte, 0, len(label)+1+128)
	b = append(b, label...)
	return append(b, 0)
}
