// Package top is the live terminal view of `tcplens top`: state counts with
// sparklines, port budgets, churn, CLOSE_WAIT by process, retransmitting
// connections and doctor's findings, refreshed every interval.
//
// The work is split so that the terminal never waits for the kernel:
//
//   - Sample (a goroutine) takes watch samples and turns each one into a
//     Frame with Build. Build is the only code that walks the sockets, so it
//     is O(sockets); it keeps at most MaxRows rows per panel.
//   - Model (bubbletea) receives Frames as messages. Update and View only
//     sort, filter and draw those rows: O(MaxRows), whatever the host holds.
//
// Presentation only: nothing here reads the kernel.
package top
