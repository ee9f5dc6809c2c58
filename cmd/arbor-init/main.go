// Command arbor-init is the static init of every sandbox (see
// internal/initproc). The daemon uses its own executable when that is static,
// and this one, installed beside it, otherwise.
package main

import (
	"os"

	"github.com/arborsh/arbor/internal/initproc"
)

func main() { os.Exit(initproc.Main(os.Args[1:])) }
