package apitypes

// EventDataNetwork is the data of a network event: the sandbox's interfaces
// and how they were configured.
type EventDataNetwork struct {
	Interfaces []NetworkInterface `json:"interfaces"`
	Configured *NetworkConfigured `json:"configured,omitempty"`
	Error      *string            `json:"error,omitempty"`
}

// NetworkInterface is one interface with its counters.
type NetworkInterface struct {
	Name      string `json:"name"`
	RxBytes   int64  `json:"rx_bytes"`
	RxPackets int64  `json:"rx_packets"`
	RxErrs    int64  `json:"rx_errs"`
	RxDrop    int64  `json:"rx_drop"`
	TxBytes   int64  `json:"tx_bytes"`
	TxPackets int64  `json:"tx_packets"`
	TxErrs    int64  `json:"tx_errs"`
	TxDrop    int64  `json:"tx_drop"`
}

// NetworkConfigured is the addressing given to the sandbox.
type NetworkConfigured struct {
	IP4        string `json:"ip4,omitempty"`
	IP4Gw      string `json:"ip4_gw,omitempty"`
	IP6        string `json:"ip6,omitempty"`
	IP6Gw      string `json:"ip6_gw,omitempty"`
	GwMAC      string `json:"gw_mac,omitempty"`
	Nameserver string `json:"nameserver,omitempty"`
}
