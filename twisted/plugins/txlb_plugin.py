from twisted.application.service import ServiceMaker

txlb = ServiceMaker("txlb", "txlb.tap", "A transparent HTTP load balancer.", "txlb")
