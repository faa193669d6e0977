//go:build !linux

package main

import "io/fs"

func inodeKey(fs.FileInfo) ([2]uint64, bool) { return [2]uint64{}, false }
