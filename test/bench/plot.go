package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// series is one line of a chart: a value per x (NaN: none).
type series struct {
	Name   string
	Values []float64
	Dashed bool
	Color  string
}

// chart is a small line chart rendered as SVG: linear axes from 0, x
// ticks at the data points.
type chart struct {
	Title, XLabel, YLabel string
	X                     []float64
	XTick                 func(float64) string
	Series                []series
}

const (
	chartW, chartH                   = 660, 400
	padL, padR, padT, padB           = 70, 210, 40, 50
	plotW, plotH                     = chartW - padL - padR, chartH - padT - padB
	fontAttrs                        = `font-family="sans-serif" font-size="12"`
	axisColor, gridColor, labelColor = "#333", "#ddd", "#333"
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// SVG renders the chart.
func (c chart) SVG() []byte {
	xMax := 0.0
	for _, x := range c.X {
		xMax = max(xMax, x)
	}
	yMax := 0.0
	for _, s := range c.Series {
		for _, v := range s.Values {
			if !math.IsNaN(v) {
				yMax = max(yMax, v)
			}
		}
	}
	xMax, yMax = niceMax(xMax), niceMax(yMax*1.05)
	px := func(x float64) float64 { return padL + x/xMax*plotW }
	py := func(y float64) float64 { return padT + plotH - y/yMax*plotH }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-family="sans-serif" font-size="15" fill="%s">%s</text>`+"\n", padL, labelColor, html.EscapeString(c.Title))
	for i := 0; i <= 5; i++ {
		y := yMax * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, py(y), padL+plotW, py(y), gridColor)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" %s text-anchor="end" fill="%s">%s</text>`+"\n", padL-6, py(y)+4, fontAttrs, labelColor, trimFloat(y))
	}
	for _, x := range c.X {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", px(x), padT, px(x), padT+plotH, gridColor)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s text-anchor="middle" fill="%s">%s</text>`+"\n", px(x), padT+plotH+16, fontAttrs, labelColor, html.EscapeString(c.XTick(x)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", padL, padT+plotH, padL+plotW, padT+plotH, axisColor)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", padL, padT, padL, padT+plotH, axisColor)
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s text-anchor="middle" fill="%s">%s</text>`+"\n", padL+plotW/2, chartH-10, fontAttrs, labelColor, html.EscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text x="16" y="%d" %s text-anchor="middle" fill="%s" transform="rotate(-90 16 %d)">%s</text>`+"\n", padT+plotH/2, fontAttrs, labelColor, padT+plotH/2, html.EscapeString(c.YLabel))
	for i, s := range c.Series {
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		for j, v := range s.Values {
			if j < len(c.X) && !math.IsNaN(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(c.X[j]), py(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.Color, dash, strings.Join(pts, " "))
		if !s.Dashed {
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", xy[0], xy[1], s.Color)
			}
		}
		ly := padT + 10 + i*20
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", padL+plotW+14, ly, padL+plotW+38, ly, s.Color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d" %s fill="%s">%s</text>`+"\n", padL+plotW+44, ly+4, fontAttrs, labelColor, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
