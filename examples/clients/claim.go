// Claim KEY_PATH from Go and finalize it, or say who has it.
//
//	go run claim.go KEY_PATH NAME
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

func main() {
	path, name := os.Args[1], os.Args[2]
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644) // the claim
	if errors.Is(err, fs.ErrExist) {
		first := "gone"
		if r, err := os.Open(path); err == nil {
			s := bufio.NewScanner(r)
			if s.Scan() {
				first = s.Text()
			}
			r.Close()
		}
		fmt.Println("lost: " + first)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	time.Sleep(100 * time.Millisecond) // the work
	if _, err := f.WriteString("succeeded\n" + name + "\n"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil { // the commit; errors surface here
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("won")
}
